import math

import pytest
import torch

import stabn
from helpers import fill_rule, load_reference, max_relative_error, reference_outputs, run_reference_input
from stabn.models import ModelSpec, STABNOutput, build_model, model_spec, to_channels_last_3d

REFERENCES = ["reference_abn_resnet18_t8_s64.json", "reference_resnet18_t16_s112.json"]


@pytest.mark.parametrize("channels_last", [False, True], ids=["ncdhw", "channels_last_3d"])
@pytest.mark.parametrize("name", REFERENCES)
def test_state_dict_and_outputs_match_the_original(fixtures_dir, name, channels_last):
    """In the original's NCDHW layout and in channels_last_3d, the default fast path."""
    ref = load_reference(fixtures_dir, name)
    model = build_model(
        ref["model"], num_classes=ref["num_classes"], frame_length=ref["frame_length"], frame_size=ref["frame_size"]
    )
    model.load_state_dict(fill_rule(fixtures_dir).fill_params(model.state_dict()))
    if channels_last:
        to_channels_last_3d(model)
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]

    outputs = run_reference_input(model, ref, fixtures_dir, channels_last)
    expected = reference_outputs(ref)
    assert len(outputs) == len(expected)
    for out, exp in zip(outputs, expected):
        assert out.shape == exp.shape
        assert max_relative_error(out, exp) <= 1e-4


@pytest.mark.parametrize("name", stabn.MODEL_NAMES)
def test_every_model_builds_and_runs_at_tiny_width(name):
    K, T, S, width = 7, 4, 32, 4
    model = build_model(name, num_classes=K, frame_length=T, frame_size=S, width=width).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, T, S, S))
    if name.startswith("abn_"):
        assert isinstance(out, STABNOutput)
        assert out.logits.shape == (2, K) and out.att_logits.shape == (2, K)
        h = S // 16
        assert out.spatial_attention.shape == (2, 1, T, h, h)
        assert out.temporal_attention.shape == (2, 1, T, 1, 1)
        for att in (out.spatial_attention, out.temporal_attention):
            assert att.min() >= 0 and att.max() <= 1
        assert model.fc_att_out.out_features == K
        assert model.fc_att_out.in_features == K * T
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (2, K)
    assert model.conv1.out_channels == width
    expansion = 4 if model.layer1[0].__class__.__name__ == "Bottleneck" else 1
    assert model.fc.in_features == 8 * width * expansion


def test_namedtuple_positions_match_the_original_tuple():
    assert STABNOutput._fields == ("logits", "att_logits", "spatial_attention", "temporal_attention")
    model = build_model("abn_resnet18", num_classes=5, frame_length=4, frame_size=32, width=4).eval()
    out = model(torch.randn(1, 3, 4, 32, 32))
    out_per, out_att, spatial, temporal = out
    assert out_per is out.logits and temporal is out.temporal_attention


def test_v2_names_build_the_v1_architecture(fixtures_dir):
    """A v2 name takes the original's v1 weights and gives the original's v1 outputs."""
    ref = load_reference(fixtures_dir, "reference_abn_resnet18_t8_s64.json")
    model = build_model(
        "abn_resnet18_v2",
        num_classes=ref["num_classes"],
        frame_length=ref["frame_length"],
        frame_size=ref["frame_size"],
    )
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()] == ref[
        "state_dict"
    ]
    model.load_state_dict(fill_rule(fixtures_dir).fill_params(model.state_dict()))
    for out, exp in zip(run_reference_input(model, ref, fixtures_dir), reference_outputs(ref)):
        assert max_relative_error(out, exp) <= 1e-4
    assert model.spec.name == "abn_resnet18_v2"
    for depth in (18, 34, 50, 101, 152):
        assert stabn.list_models(f"abn_resnet{depth}*") == [f"abn_resnet{depth}", f"abn_resnet{depth}_v2"]


def test_list_models_filters_by_pattern():
    assert stabn.list_models() == list(stabn.MODEL_NAMES)
    assert stabn.list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert stabn.list_models("*50*") == ["resnet50", "abn_resnet50", "abn_resnet50_v2"]
    assert stabn.list_models("vit*") == []


def test_build_model_takes_keywords_after_the_name():
    with pytest.raises(TypeError):
        build_model("abn_resnet18", 5, 8)


def test_build_model_sets_the_spec():
    names = ["a", "b", "c"]
    model = build_model(
        "abn_resnet18", num_classes=3, frame_length=4, frame_size=32, width=4, channel_order="rgb", class_names=names
    )
    assert model.spec == ModelSpec(
        name="abn_resnet18",
        num_classes=3,
        frame_length=4,
        frame_size=32,
        width=4,
        channel_order="rgb",
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
        class_names=("a", "b", "c"),
    )
    assert model_spec(torch.nn.DataParallel(model)) is model.spec
    assert [model.spec.class_name(i) for i in range(3)] == names
    assert ModelSpec.from_dict(model.spec.to_dict()) == model.spec
    assert model.spec.replace(channel_order="bgr").mean == (103.53, 116.28, 123.675)
    with pytest.raises(ValueError, match="class_names has 2 names for 3 classes"):
        build_model("resnet18", num_classes=3, frame_length=4, class_names=["a", "b"])


def test_stabn_strides_space_only_and_the_baseline_strides_time():
    x = torch.randn(1, 3, 8, 64, 64)
    abn = build_model("abn_resnet18", num_classes=3, frame_length=8, frame_size=64, width=4).eval()
    assert abn(x).spatial_attention.shape == (1, 1, 8, 4, 4)
    base = build_model("resnet18", num_classes=3, frame_length=8, frame_size=64, width=4).eval()
    feats = base.layer4(base.layer3(base.layer2(base.layer1(base.maxpool(base.conv1(x))))))
    assert feats.shape[2:] == (1, 2, 2)


def test_wrong_clip_length_gets_a_clear_error():
    model = build_model("abn_resnet18", num_classes=5, frame_length=8, frame_size=32, width=4).eval()
    with pytest.raises(ValueError, match=r"frame_length=8 but got a clip of 6 frames"):
        model(torch.randn(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match=r"expects clips shaped \[B, 3, T, H, W\]"):
        model(torch.randn(3, 8, 32, 32))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model 'abn_resnet19'"):
        build_model("abn_resnet19", num_classes=5, frame_length=8)
    with pytest.raises(ValueError, match="frame_length must be a positive integer"):
        build_model("abn_resnet18", num_classes=5, frame_length=0)


def test_stabn_init_follows_the_original_rule():
    torch.manual_seed(0)
    model = build_model("abn_resnet50", num_classes=5, frame_length=4, frame_size=32, width=16)
    conv = model.layer_att_common[0].conv2  # kernel (1, 3, 3), 128 outputs
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / n), rel=0.05)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)
