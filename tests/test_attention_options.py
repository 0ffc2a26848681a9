"""ST-ABN's attention options: what each changes in the forward pass and the loss, how they
travel with checkpoints, and that the defaults stay the original architecture."""

import pytest
import torch

import stabn
from stabn.checkpoint import save_checkpoint
from stabn.config import load_config
from stabn.engine.losses import classification_losses
from stabn.errors import ConfigError
from stabn.models import build_model
from stabn.models.abn import AttentionOptions, attended_motion

TINY = dict(num_classes=5, frame_length=4, frame_size=32, width=4)


def set_map(module, value):
    """Make the attention map `module` outputs `value` everywhere (a forward hook)."""
    return module.register_forward_hook(lambda mod, args, out: torch.full_like(out, value))


@torch.no_grad()
def test_multiply_gate_passes_only_what_the_spatial_map_keeps():
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 3, 4, 32, 32)
    for gate, blind in (("multiply", True), ("residual", False)):
        model = build_model("abn_resnet18", **TINY, attention={"spatial_gate": gate, "fusion": "product"}).eval()
        set_map(model.conv_spatial_att, 0.0)
        set_map(model.conv_temp_att3, 1.0)
        # With the map at 0 a multiplying gate leaves layer4 nothing of the clip: every clip
        # gets the same perception logits. The residual gate x * (1 + 0) keeps it all.
        same = torch.allclose(model(a).logits, model(b).logits, atol=1e-6)
        assert same == blind, gate


@torch.no_grad()
def test_product_fusion_lets_the_temporal_map_remove_frames():
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 4, 32, 32)
    for fusion, blind in (("product", True), ("concat", False)):
        model = build_model("abn_resnet18", **TINY, attention={"fusion": fusion}).eval()
        set_map(model.conv_spatial_att, 0.5)
        set_map(model.conv_temp_att3, 0.0)
        other = clip.clone()
        other[:, :, 1:] = torch.randn_like(other[:, :, 1:])  # the same first frame only
        # Temporal attention 0: a product fusion sees no frame at all; concat still sees x * (1 + s).
        assert torch.allclose(model(clip).logits, model(other).logits, atol=1e-6) == blind, fusion
    concat = build_model("abn_resnet18", **TINY)
    product = build_model("abn_resnet18", **TINY, attention={"fusion": "product"})
    assert concat.conv_att_mechanism[0].in_channels == 2 * product.conv_att_mechanism[0].in_channels


def test_the_defaults_are_the_original_architecture():
    default = build_model("abn_resnet18", **TINY)
    explicit = build_model("abn_resnet18", **TINY, attention=AttentionOptions("residual", "concat", "none"))
    assert [(k, v.shape) for k, v in default.state_dict().items()] == [
        (k, v.shape) for k, v in explicit.state_dict().items()
    ]
    assert default.spec.attention == AttentionOptions() and default.spec.attention.original
    with pytest.raises(ValueError, match="resnet18 has no attention branch"):
        build_model("resnet18", **TINY, attention={"fusion": "product"})
    with pytest.raises(ValueError, match="attention spatial_gate must be one of residual, multiply, got 'sigmoid'"):
        build_model("abn_resnet18", **TINY, attention={"spatial_gate": "sigmoid"})


def test_options_travel_with_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    options = AttentionOptions(spatial_gate="multiply", fusion="product", norm="peak", temporal="frame")
    model = build_model("abn_resnet18", **TINY, attention=options).eval()
    save_checkpoint(tmp_path / "c.pt", model, model.spec.to_dict())
    assert model.spec.to_dict()["attention"] == {
        "spatial_gate": "multiply", "fusion": "product", "norm": "peak", "temporal": "frame"
    }  # fmt: skip
    loaded = stabn.load_pretrained(tmp_path / "c.pt")
    assert loaded.spec.attention == options
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    # A bare state dict says which fusion and temporal head it has (not the gate or the norm).
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    inferred = stabn.load_pretrained(tmp_path / "bare.pt", frame_length=4).spec.attention
    assert inferred == AttentionOptions(fusion="product", temporal="frame")


def test_sparsity_adds_the_mean_of_each_map():
    torch.manual_seed(0)
    model = build_model("abn_resnet18", **TINY, attention={"spatial_gate": "multiply", "fusion": "product"})
    out = model(torch.randn(2, 3, 4, 32, 32))
    labels = torch.tensor([1, 3])
    plain, per, att = classification_losses(out, labels)
    sparse, per2, att2 = classification_losses(out, labels, spatial_sparsity=0.5, temporal_sparsity=0.25)
    torch.testing.assert_close(plain, per + att)
    area = 0.5 * out.spatial_attention.mean() + 0.25 * out.temporal_attention.mean()
    torch.testing.assert_close(sparse, plain + area)
    only_spatial = classification_losses(out, labels, spatial_sparsity=0.5)[0]
    torch.testing.assert_close(only_spatial, plain + 0.5 * out.spatial_attention.mean())
    assert torch.equal(per, per2) and torch.equal(att, att2)


def test_config_takes_the_options_for_st_abn_only():
    cfg = load_config(None, ["model.name=abn_resnet18", "model.attention.spatial_gate=multiply",
                             "model.attention.fusion=product", "train.spatial_sparsity=0.5"])  # fmt: skip
    assert cfg.model.attention == AttentionOptions(spatial_gate="multiply", fusion="product")
    assert cfg.train.spatial_sparsity == 0.5
    with pytest.raises(ConfigError, match="'model.attention.fusion' must be one of concat, product, got 'sum'"):
        load_config(None, ["model.attention.fusion=sum"])
    with pytest.raises(ConfigError, match="'model.name' 'resnet18' has no attention branch"):
        load_config(None, ["model.name=resnet18", "train.temporal_sparsity=0.1"])


@torch.no_grad()
def test_peak_norm_puts_each_maps_maximum_at_1():
    torch.manual_seed(0)
    plain = build_model("abn_resnet18", **TINY).eval()
    peak = build_model("abn_resnet18", **TINY, attention={"norm": "peak"}).eval()
    peak.load_state_dict(plain.state_dict())  # the same weights: only the scaling differs
    x = torch.randn(2, 3, 4, 32, 32)
    a, b = plain(x), peak(x)
    torch.testing.assert_close(b.spatial_attention, a.spatial_attention / a.spatial_attention.amax((3, 4), True))
    torch.testing.assert_close(b.temporal_attention, a.temporal_attention / a.temporal_attention.amax(2, True))
    torch.testing.assert_close(b.spatial_attention.amax((3, 4)), torch.ones(2, 1, 4))
    torch.testing.assert_close(b.temporal_attention.amax(2), torch.ones(2, 1, 1, 1))


@torch.no_grad()
def test_frame_temporal_attention_has_no_position_prior():
    """Given the same response in every frame, "frame" scores every frame alike (but the end
    ones, which its temporal kernel sees zero-padded): it has no weights per frame position.
    The original's Linear(T, T) layers do, and score positions differently."""
    torch.manual_seed(0)
    clip = torch.randn(1, 3, 8, 32, 32)
    for temporal, alike in (("frame", True), ("mlp", False)):
        model = build_model("abn_resnet18", **{**TINY, "frame_length": 8}, attention={"temporal": temporal}).eval()
        set_map(model.conv_temp_att1, 0.7)  # the pooled response the temporal head scores
        inner = model(clip).temporal_attention.flatten()[1:-1]
        assert torch.allclose(inner, inner[:1].expand_as(inner)) == alike, temporal
    assert "temp_att_frame.0.weight" in model.state_dict() or temporal == "mlp"


@torch.no_grad()
def test_class_temporal_attention_reads_the_per_frame_class_scores():
    """ "class": each frame's weight is a sigmoid of an affine map of the attention branch's
    strongest class score in that frame, the scores its classifier reads."""
    torch.manual_seed(0)
    model = build_model("abn_resnet18", **TINY, attention={"temporal": "class"}).eval()
    scores = {}
    model.conv_att_out.register_forward_hook(lambda mod, args, out: scores.setdefault("out", out))
    out = model(torch.randn(1, 3, 4, 32, 32))
    strongest = scores["out"].amax(dim=1).flatten()  # [T]
    conv = model.temp_att_class[0]
    expected = torch.sigmoid(conv.weight.flatten() * strongest + conv.bias)
    torch.testing.assert_close(out.temporal_attention.flatten(), expected)


@pytest.mark.parametrize("temporal", ["mlp", "frame", "class", "motion"])
def test_every_parameter_takes_part_in_the_loss(temporal):
    """DDP (without find_unused_parameters) needs every parameter in the graph."""
    torch.manual_seed(0)
    options = {"spatial_gate": "multiply", "fusion": "product", "norm": "peak", "temporal": temporal}
    model = build_model("abn_resnet18", **TINY, attention=options)
    loss = classification_losses(model(torch.randn(2, 3, 4, 32, 32)), torch.tensor([0, 1]), 0.5, 0.5)[0]
    loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_attended_motion_is_the_change_under_the_spatial_map():
    """ "motion": a frame scores the change, from the frame before, of the stem's features in the
    cells the spatial map attends to, over the clip's mean; change where the map does not look
    (a distractor) scores nothing, and frame 0 has no frame before it."""
    stem = torch.zeros(1, 2, 5, 8, 8)  # [B, C, T, H', W'], pooled 4x4 to the map's 2x2 cells
    stem[:, :, 3, :4, :4] = 1.0  # the attended cell changes at frame 3 (and back at frame 4)
    stem[:, :, 1:, 4:, 4:] = torch.arange(4.0).view(1, 1, 4, 1, 1)  # a cell never attended changes every frame
    spatial = torch.zeros(1, 1, 5, 2, 2)
    spatial[..., 0, 0] = 1.0
    motion = attended_motion(stem, spatial).flatten()
    # Frames 3 and 4 each change by 1 in the attended cell: mean 2/5, so each scores 1 / 0.4.
    torch.testing.assert_close(motion, torch.tensor([0.0, 0.0, 0.0, 2.5, 2.5]))


@torch.no_grad()
def test_motion_temporal_attention_follows_the_attended_change():
    """With the spatial map on the whole frame, the frame where the clip changes gets the highest
    temporal weight, the still frames alike the lowest: the head's weights are the same at every
    frame position, and the weight increases with the motion whatever they learn."""
    torch.manual_seed(0)
    model = build_model("abn_resnet18", **{**TINY, "frame_length": 8}, attention={"temporal": "motion"}).eval()
    with torch.no_grad():
        model.temp_att_motion.log_scale.fill_(-2.0)  # whatever the scale, more motion scores higher
        model.temp_att_motion.bias.fill_(-3.0)
    clip = torch.zeros(1, 3, 8, 32, 32)
    clip[:, :, 5:, :8, :8] = 1.0  # the top-left corner changes at frame 5 and stays
    set_map(model.conv_spatial_att, 1.0)
    temporal = model(clip).temporal_attention.flatten()
    assert int(temporal.argmax()) == 5
    assert torch.allclose(temporal[:5], temporal[:1].expand(5)) and torch.allclose(temporal[6:], temporal[:2])
