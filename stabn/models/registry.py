"""One table from model name to builder, and `build_model` to use it."""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

from torch import nn

from stabn.checkpoint import unwrap_model
from stabn.config.schema import MODEL_NAMES, STABN_NAMES, AttentionOptions
from stabn.errors import CheckpointError
from stabn.models.abn import STABN, stabn
from stabn.models.blocks import DEPTHS
from stabn.models.inflate import IMAGENET, imagenet_state_dict, imagenet_weights_file, inflate_2d_weights
from stabn.models.resnet3d import resnet3d
from stabn.models.spec import DEFAULT_FRAME_SIZE, ModelSpec

log = logging.getLogger(__name__)

MODEL_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}
DEPTH_OF: Dict[str, int] = {}  # model name -> backbone depth
# The original's "v2" builds exactly the v1 architecture; kept as aliases, listed last.
_NAMES = [entry for d in DEPTHS for entry in ((f"resnet{d}", resnet3d, d), (f"abn_resnet{d}", stabn, d))]
_NAMES += [(f"abn_resnet{d}_v2", stabn, d) for d in DEPTHS]
for _name, _builder, _depth in _NAMES:
    MODEL_REGISTRY[_name] = functools.partial(_builder, _depth)
    DEPTH_OF[_name] = _depth

if tuple(MODEL_REGISTRY) != MODEL_NAMES:  # the schema validates names without importing the zoo
    raise ImportError("stabn.config.schema.MODEL_NAMES no longer lists the registry's models")


def list_models(pattern: Optional[str] = None) -> List[str]:
    """The registered model names, those matching the shell-style `pattern` (``"abn_*"``) when given."""
    return [n for n in MODEL_NAMES if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def is_stabn(model: Union[str, nn.Module]) -> bool:
    """Whether `model`, a model name or a model (bare or wrapped by DataParallel, DDP or
    torch.compile), is an ST-ABN: its forward returns `STABNOutput`."""
    if isinstance(model, str):
        return model in STABN_NAMES
    return isinstance(unwrap_model(model), STABN)


def build_model(
    name: str,
    *,
    num_classes: int,
    frame_length: int,
    frame_size: int = DEFAULT_FRAME_SIZE,
    dropout: float = 0.5,
    width: int = 64,
    pretrained_2d: Optional[Union[str, os.PathLike]] = None,
    pretrained_2d_strict: bool = True,
    channel_order: str = "bgr",
    class_names: Optional[Sequence[str]] = None,
    short_side: Optional[int] = None,
    attention: Optional[Union[AttentionOptions, Mapping[str, str]]] = None,
) -> nn.Module:
    """Build a registered model, its `ModelSpec` set as `model.spec`.

    `pretrained_2d` inflates 2D ResNet weights into the 3D model: ``"imagenet"`` for
    torchvision's IMAGENET1K_V1 weights of the same depth (through torchvision's weights API
    and cache), or a local torchvision ResNet state-dict file; the file must fill the whole
    backbone, or with `pretrained_2d_strict=False` fills what it fits. `channel_order` (with the original's
    normalisation in that order), `short_side` (of the frames before cropping) and `class_names`
    describe the model's input and output.
    `attention` holds ST-ABN's attention options (`stabn.models.abn.AttentionOptions`, or
    a dict of its fields); None builds the original's architecture."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    _check_sizes(num_classes=num_classes, frame_length=frame_length, frame_size=frame_size, width=width)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    attention = AttentionOptions(**attention) if isinstance(attention, Mapping) else attention or AttentionOptions()
    options = {}
    if not attention.original:
        if not is_stabn(name):
            raise ValueError(f"{name} has no attention branch: attention options are ST-ABN's")
        options = {"attention": attention}
    spec = ModelSpec(name=name, num_classes=num_classes, frame_length=frame_length, frame_size=frame_size,
                     width=width, channel_order=channel_order, class_names=class_names, short_side=short_side,
                     attention=attention)  # fmt: skip
    model = MODEL_REGISTRY[name](
        num_classes=num_classes, frame_length=frame_length, frame_size=frame_size, dropout=dropout, width=width,
        **options,
    )  # fmt: skip
    model.spec = spec
    if pretrained_2d is not None:
        _inflate_pretrained_2d(model, name, pretrained_2d, strict=pretrained_2d_strict)
    return model


def _check_sizes(**sizes: int) -> None:
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _inflate_pretrained_2d(
    model: nn.Module, name: str, pretrained_2d: Union[str, os.PathLike], *, strict: bool
) -> None:
    """Inflate `pretrained_2d` (see `build_model`) into `model`, the model `name`; with `strict`,
    a file that does not fill the whole backbone is refused."""
    imagenet = pretrained_2d == IMAGENET
    source = imagenet_state_dict(DEPTH_OF[name]) if imagenet else pretrained_2d
    report = inflate_2d_weights(model, source)
    if report.misfit is None:
        log.info("%s", report.summary())
    elif strict:
        file = imagenet_weights_file(DEPTH_OF[name]) if imagenet else pretrained_2d
        raise CheckpointError(
            f"{file}: does not fit {name}'s backbone: {report.misfit} ({len(report.taken)} of {report.backbone} "
            f"backbone tensors fit): give torchvision's ResNet-{DEPTH_OF[name]} weights with model.width=64, or "
            "model.pretrained_2d_strict=false to load the tensors that fit"
        )
    else:
        log.warning("model.pretrained_2d_strict=false: %s; first misfit: %s", report.summary(), report.misfit)
