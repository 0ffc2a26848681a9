"""`stabn.explain`'s methods on every kind of model of the zoo: the same fields and pictures,
ST-ABN's attention as it always was, peer methods scaled to their peak, Grad-CAM where the
evidence is, one-line errors, and Captum as an optional extra."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

import stabn
from stabn.config import load_config
from stabn.config.schema import EXPLAIN_METHODS
from stabn.engine.eval_reports import attention_method
from stabn.errors import ConfigError
from stabn.inference import picture_title
from stabn.interpret import saliency
from stabn.interpret.methods import MethodError
from stabn.interpret.visualize import attention_sheet, attention_tiles, header_height, upsample_spatial
from stabn.models import ModelSpec

T, S, K = 4, 32, 5
PEERS = [m for m in EXPLAIN_METHODS if m != "attention"]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: stabn.build_model(name, num_classes=K, frame_length=T, frame_size=S, width=4)
            for name in ("resnet18", "abn_resnet18")}  # fmt: skip


def clip(seed: int) -> torch.Tensor:
    return torch.randn(3, T, S, S, generator=torch.Generator().manual_seed(seed))


def expected_volume(model, x, method, target, layer):
    """The saliency module's volume, as `explain` is documented to start from."""
    if method == "gradcam":
        return saliency.gradcam(model, x, target, layer)[0]
    if method == "input_gradient":
        return saliency.input_gradient(model, x, target)[0]
    return saliency.integrated_gradients(model, x, target, 2)[0]


# Every method each kind of model has: a 3D ResNet has no attention (test_inference checks the error).
COMBINATIONS = [("abn_resnet18", m) for m in EXPLAIN_METHODS] + [("resnet18", m) for m in PEERS]


@pytest.mark.parametrize("name,method", COMBINATIONS)
def test_every_model_and_method_gives_the_same_fields_and_pictures(models, name, method):
    model = models[name]
    x = clip(1)
    e = stabn.explain(model, x, topk=3, method=method, steps=2)
    assert e.method == method and e.spatial.shape == (T, S, S) and e.temporal.shape == (T,)
    assert e.spatial.min() >= 0 and e.spatial.max() <= 1 and e.temporal.min() >= 0 and e.temporal.max() <= 1
    assert e.frames.shape == (T, S, S, 3) and e.frames.dtype == np.uint8
    # 32 px frames drawn 7x, a 20 px bar above each; the header names each branch and the map.
    assert len(e.overlays) == T and all(o.size == (224, 20 + 224) for o in e.overlays)
    lines = (2 if name.startswith("abn") else 1) + (method != "attention")
    assert e.image.size == (T * 224, header_height(lines) + 20 + 224)
    assert len(e.animation()) == T
    if method == "attention":
        assert e.layer is None and e.target is None
        return
    assert e.layer == ({"resnet18": "layer4", "abn_resnet18": "layer3"}[name] if method == "gradcam" else None)
    assert e.target == e.prediction.classes[0]
    # The documented normalisation: the volume over the clip's maximum, the per-frame mass over its maximum.
    volume = expected_volume(model, x, method, e.target, e.layer).numpy()
    assert e.spatial == pytest.approx(volume / volume.max(), abs=1e-5)
    mass = volume.sum(axis=(1, 2))
    assert e.temporal == pytest.approx(mass / mass.max(), abs=1e-5)
    assert e.spatial.max() == pytest.approx(1) and e.temporal.max() == pytest.approx(1)


def test_attention_of_an_st_abn_is_what_it_always_was(models):
    model, x = models["abn_resnet18"], clip(2)
    e = stabn.explain(model, x)
    assert (e.method, e.layer, e.target) == ("attention", None, None)
    with torch.no_grad():
        out = model(x.unsqueeze(0))
    frames = model.spec.denormalize(x)
    assert np.array_equal(e.spatial, upsample_spatial(out.spatial_attention[0], S, S))
    assert np.array_equal(e.temporal, out.temporal_attention[0].flatten().numpy())
    tiles = attention_tiles(frames, out.spatial_attention[0], out.temporal_attention[0])
    assert all(np.array_equal(np.asarray(o), t) for o, t in zip(e.overlays, tiles))
    assert np.array_equal(np.asarray(e.image), np.asarray(attention_sheet(tiles, picture_title(e.prediction))))


@pytest.mark.parametrize("name", ["resnet18", "abn_resnet18"])
def test_the_maps_follow_the_clip(models, name):
    model = models[name]
    for method in ("gradcam", "input_gradient"):
        a, b = (stabn.explain(model, clip(seed), method=method, layer="layer3" if method == "gradcam" else None)
                for seed in (3, 4))  # fmt: skip
        assert not np.allclose(a.spatial, b.spatial), method


class RegionModel(nn.Module):
    """Class 0 scores the ReLU'd channel sum inside one region (rows 8-15, columns 16-23 of every
    frame); class 1 its opposite. Its spec leaves pixel values as they are."""

    spec = ModelSpec(name="region", num_classes=2, frame_length=T, frame_size=S, mean=(0.0,) * 3, std=(1.0,) * 3)

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv3d(3, 1, 1, bias=False)
        nn.init.ones_(self.layer4.weight)

    def forward(self, x):
        score = torch.relu(self.layer4(x))[..., 8:16, 16:24].mean(dim=(1, 2, 3, 4))
        return torch.stack([score, -score], dim=1)


def test_peer_maps_point_at_the_evidence():
    """A bright square in the scored region of frame 2: Grad-CAM (layer4) and the gradients
    light it up and nothing else; a second square outside the region, in frame 0, takes no part
    in the score, and the gradients leave it dark."""
    x = torch.zeros(3, T, S, S)
    x[:, 2, 8:16, 16:24] = 1.0
    e = stabn.explain(RegionModel(), x, method="gradcam")
    assert e.layer == "layer4" and e.target == 0
    inside = np.zeros((T, S, S), dtype=bool)
    inside[2, 8:16, 16:24] = True
    assert e.spatial[inside] == pytest.approx(1.0) and e.spatial[~inside] == pytest.approx(0.0, abs=1e-6)
    assert e.temporal == pytest.approx([0, 0, 1, 0], abs=1e-6)
    x[:, 0, 20:28, 0:8] = 1.0
    for method in ("input_gradient", "integrated_gradients"):
        e = stabn.explain(RegionModel(), x, method=method, steps=4)
        assert e.spatial[inside] == pytest.approx(1.0) and e.spatial[~inside].max() == 0.0, method
        assert e.temporal.tolist() == [0, 0, 1, 0], method


def test_a_target_class_and_bad_options_are_one_line_value_errors(models):
    resnet, abn, x = models["resnet18"], models["abn_resnet18"], clip(5)
    e = stabn.explain(resnet, x, method="input_gradient", target=3)
    volume = saliency.input_gradient(resnet, x, 3)[0].numpy()
    assert e.target == 3 and e.spatial == pytest.approx(volume / volume.max(), abs=1e-5)
    assert e.image.size[1] == header_height(2) + 20 + 224
    bad = [
        (resnet, dict(method="gradcm"),
         "method must be one of attention, gradcam, input_gradient, integrated_gradients, got 'gradcm'"),
        (resnet, dict(method="input_gradient", layer="layer3"),
         "layer 'layer3' is Grad-CAM's layer: it does not apply to method 'input_gradient'"),
        (abn, dict(layer="layer3"), "layer 'layer3' is Grad-CAM's layer: it does not apply to method 'attention'"),
        (resnet, dict(layer="layer9"),
         "resnet18 has no layer 'layer9' for Grad-CAM: give a submodule's name, e.g. layer3 or layer4"),
        (abn, dict(target=1), "target applies to the peer methods: ST-ABN's attention is the same for every class"),
        (resnet, dict(target=K), f"target {K} is not a class of the model: give 0 to {K - 1}"),
        (resnet, dict(method="integrated_gradients", steps=0), "steps must be >= 1, got 0"),
    ]  # fmt: skip
    for model, options, message in bad:
        with pytest.raises(ValueError) as caught:
            stabn.explain(model, x, **options)
        assert isinstance(caught.value, MethodError) and str(caught.value) == message, options


def test_without_captum_peer_methods_say_how_to_install_it_and_attention_still_works(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    for name, method in (("resnet18", None), ("abn_resnet18", "gradcam"), ("abn_resnet18", "integrated_gradients")):
        with pytest.raises(saliency.CaptumMissing) as caught:
            stabn.explain(models[name], clip(6), method=method)
        assert str(caught.value) == "Captum is needed for the peer explainers: pip install -e .[explain]"
    assert stabn.explain(models["abn_resnet18"], clip(6)).method == "attention"


def test_eval_attention_keys_resolve_for_the_model_or_name_the_key(models, monkeypatch):
    resnet, abn = models["resnet18"], models["abn_resnet18"]

    def resolved(model, *overrides):
        return attention_method(load_config(None, list(overrides)), model)

    assert resolved(abn) == ("attention", None)
    assert resolved(resnet) == ("gradcam", "layer4")
    assert resolved(abn, "eval.attention_method=gradcam") == ("gradcam", "layer3")
    assert resolved(resnet, "eval.attention_layer=layer3") == ("gradcam", "layer3")
    assert resolved(abn, "eval.attention_method=integrated_gradients") == ("integrated_gradients", None)
    bad = [
        (resnet, ["eval.attention_method=attention"], "'eval.attention_method': method 'attention' needs an ST-ABN"),
        (abn, ["eval.attention_layer=layer4"],
         "'eval.attention_layer': layer 'layer4' is Grad-CAM's layer: it does not apply to method 'attention' "
         "(eval.attention_method=auto)"),
        (resnet, ["eval.attention_layer=fc7"], "'eval.attention_layer': resnet18 has no layer 'fc7' for Grad-CAM"),
    ]  # fmt: skip
    for model, overrides, message in bad:
        with pytest.raises(ConfigError) as caught:
            resolved(model, *overrides)
        assert str(caught.value).startswith(message), str(caught.value)
    monkeypatch.setitem(sys.modules, "captum", None)
    with pytest.raises(ConfigError) as caught:
        resolved(resnet)
    assert str(caught.value) == (
        "'eval.attention_method' auto draws Grad-CAM at layer4 for resnet18: Captum is needed for the peer "
        "explainers: pip install -e .[explain]"
    )
    assert resolved(abn) == ("attention", None)
