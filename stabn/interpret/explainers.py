"""What the explanation benchmark runs: its `Settings`, and its explainers (`explainers`), each
on the model it explains: the ST-ABN (`STABN`), a second ST-ABN whose own attention is scored
on the same clips (`REFERENCE`) or the 3D ResNet baseline (`BASELINE`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Tuple

from torch import Tensor, nn

from stabn.interpret import saliency
from stabn.interpret.scoring import NOISE_STREAM, RANDOM_VOLUME_STREAM, video_rng

# The ST-ABN explained; a second ST-ABN (e.g. the original architecture) whose own attention is
# scored on the same clips; the 3D ResNet baseline.
STABN, REFERENCE, BASELINE = "stabn", "reference", "baseline"


@dataclass
class Settings:
    """What the benchmark runs; the CLI's options."""

    videos: int = 200  # the first N videos of the split
    auc_videos: int = 64  # deletion / insertion on the first M of those
    steps: int = 16  # deletion / insertion steps
    layers: Tuple[str, ...] = ("layer3", "layer4")  # Grad-CAM layers
    smoothgrad_samples: int = 8
    ig_steps: int = 16
    bootstrap: int = 1000  # resamples
    confidence: float = 0.95
    seed: int = 0
    split: str = "val"
    batch_size: int = 8  # clips a forward at most (noisy, interpolated, deleted / inserted)
    pictures: int = 0  # side-by-side pictures of every explainer for the first N videos
    # The model-randomisation sanity check (`stabn.interpret.sanity`): these explainers, on the
    # first N videos (0: no check).
    sanity_explainers: Tuple[str, ...] = ("stabn_attention", "gradcam_layer3")
    sanity_videos: int = 16


@dataclass
class Explainer:
    """One row of the benchmark: a name, the model it explains (ST-ABN or the baseline) and a
    function ``(model, clip, target, video_index) -> (V [T, S, S], p [T] or None)``."""

    name: str
    model: str
    run: Callable[[nn.Module, Tensor, int, int], saliency.Explanation]


def explainers(settings: Settings, with_baseline: bool, with_reference: bool = False) -> List[Explainer]:
    """The benchmark's explainers, in table order."""
    s = settings
    rows = [Explainer("stabn_attention", STABN, lambda m, c, t, i: saliency.stabn_attention(m, c, t))]
    if with_reference:
        rows.append(
            Explainer("reference_stabn_attention", REFERENCE, lambda m, c, t, i: saliency.stabn_attention(m, c, t))
        )
    rows += [Explainer("attention_class_map", STABN, lambda m, c, t, i: saliency.attention_class_map(m, c, t))]
    for layer in s.layers:
        rows.append(Explainer(f"gradcam_{layer}", STABN, partial(_gradcam, layer=layer)))
    if with_baseline:
        for layer in s.layers:
            rows.append(Explainer(f"baseline_gradcam_{layer}", BASELINE, partial(_gradcam, layer=layer)))

    def smooth(m: nn.Module, c: Tensor, t: int, i: int) -> saliency.Explanation:
        seed = int(video_rng(s.seed, NOISE_STREAM, i).integers(2**62))
        return saliency.smoothgrad(m, c, t, s.smoothgrad_samples, seed, s.batch_size)

    rows += [
        Explainer("input_gradient", STABN, lambda m, c, t, i: saliency.input_gradient(m, c, t)),
        Explainer("smoothgrad", STABN, smooth),
        Explainer(
            "integrated_gradients",
            STABN,
            lambda m, c, t, i: saliency.integrated_gradients(m, c, t, s.ig_steps, s.batch_size),
        ),
        Explainer(
            "random", STABN, lambda m, c, t, i: saliency.random_explainer(c, video_rng(s.seed, RANDOM_VOLUME_STREAM, i))
        ),
        Explainer("centre", STABN, lambda m, c, t, i: saliency.centre_prior(c)),
        Explainer("uniform_in_time", STABN, lambda m, c, t, i: saliency.uniform_in_time(c)),
    ]
    return rows


def _gradcam(model: nn.Module, clip: Tensor, target: int, index: int, layer: str) -> saliency.Explanation:
    return saliency.gradcam(model, clip, target, layer)
