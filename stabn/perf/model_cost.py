"""What a model costs at a given clip size, without running it: parameters, the FLOPs of one
forward (counted by `torch.utils.flop_counter.FlopCounterMode`) and the activations a training
step keeps for its backward pass (the tensors autograd saves, summed), per clip. The model runs
on PyTorch's meta device, so full-size figures (32 x 224 x 224, ResNet-50) take seconds on any
machine. Prints one JSON line.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch.utils.flop_counter import FlopCounterMode

from stabn.engine.losses import classification_losses
from stabn.models import build_model


def model_cost(name: str, frame_length: int, frame_size: int, width: int = 64, num_classes: int = 174,
               attention: Dict[str, str] = None) -> Dict[str, object]:  # fmt: skip
    """Parameters, forward FLOPs of one clip and bytes saved for backward per clip (fp32),
    exactly, and the same in millions, GFLOPs and MB."""
    with torch.device("meta"):
        model = build_model(
            name, num_classes=num_classes, frame_length=frame_length, frame_size=frame_size, width=width,
            attention=attention,
        )  # fmt: skip
        clips = torch.empty(1, 3, frame_length, frame_size, frame_size)
        labels = torch.zeros(1, dtype=torch.long)
    model.train()
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # Parameters are kept whatever the batch; what a step adds is everything else.
        if not isinstance(tensor, torch.nn.Parameter):
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(clips)
    flops = counter.get_total_flops()
    classification_losses(out, labels)  # builds the rest of the graph a training step keeps
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "attention": dict(attention or {}),
        "frame_length": frame_length,
        "frame_size": frame_size,
        "width": width,
        "num_classes": num_classes,
        "parameters": parameters,
        "forward_flops": flops,
        "saved_for_backward_bytes": saved[0],
        "parameters_m": round(parameters / 1e6, 3),
        "forward_gflops": round(flops / 1e9, 2),
        "saved_for_backward_mb": round(saved[0] / 2**20, 1),
    }
