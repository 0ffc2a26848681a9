import logging

import pytest
import torch
import torchvision

from stabn.errors import CheckpointError
from stabn.models import build_model, inflate_2d_weights


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagenet")
    paths = {}
    for depth in (18, 50):
        torch.manual_seed(depth)
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        # Non-trivial BN statistics, so copying them is visible.
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        paths[depth] = folder / f"resnet{depth}.pth"
        torch.save(net.state_dict(), paths[depth])
    return paths


@pytest.mark.parametrize("name,depth", [("abn_resnet50", 50), ("resnet50", 50), ("abn_resnet18", 18), ("resnet18", 18)])
def test_every_inflated_kernel_is_the_2d_kernel_spread_over_time(resnet_files, name, depth):
    state_2d = torch.load(resnet_files[depth], weights_only=True)
    model = build_model(name, num_classes=10, frame_length=8, frame_size=64)
    report = inflate_2d_weights(model, resnet_files[depth])
    state_3d = model.state_dict()

    convs_2d = [k for k, v in state_2d.items() if v.dim() == 4]
    assert set(convs_2d) <= set(report.taken)  # every 2D conv has a 3D twin with the same name
    assert not report.mismatched
    for key in report.taken:
        w3, w2 = state_3d[key], state_2d[key]
        if w3.dim() == 5:
            kt = w3.shape[2]
            for t in range(kt):
                torch.testing.assert_close(w3[:, :, t], w2 / kt, rtol=0, atol=0)
        else:
            torch.testing.assert_close(w3, w2, rtol=0, atol=0)
    # Attention branch and classifier have no 2D counterpart (or the wrong shape).
    assert "fc.weight" in report.left
    if name.startswith("abn_"):
        assert any(k.startswith("layer_att_common.") for k in report.left)
        assert not any(k.startswith("layer_att_common.") for k in report.taken)
    assert set(report.taken) | set(report.left) == set(state_3d)


def test_baseline_stem_kernel_is_divided_by_its_temporal_length(resnet_files):
    model = build_model("resnet18", num_classes=10, frame_length=8, frame_size=64)
    inflate_2d_weights(model, resnet_files[18])
    w2 = torch.load(resnet_files[18], weights_only=True)["conv1.weight"]
    assert model.conv1.weight.shape[2] == 7
    torch.testing.assert_close(model.conv1.weight.sum(dim=2), w2, rtol=1e-5, atol=1e-7)


def test_constant_clip_gives_the_2d_stem_response(resnet_files):
    """On a clip of identical frames an inflated conv responds like the 2D one (I3D's point)."""
    model = build_model("resnet18", num_classes=10, frame_length=8, frame_size=64)
    inflate_2d_weights(model, resnet_files[18])
    net2d = torchvision.models.resnet18(weights=None)
    net2d.load_state_dict(torch.load(resnet_files[18], weights_only=True))
    frame = torch.randn(1, 3, 64, 64)
    clip = frame.unsqueeze(2).repeat(1, 1, 8, 1, 1)
    with torch.no_grad():
        out3d = model.conv1(clip)[:, :, 4]  # a frame away from the temporal zero padding
        out2d = net2d.conv1(frame)
    torch.testing.assert_close(out3d, out2d, rtol=1e-4, atol=1e-5)


def test_width_mismatch_is_reported_not_forced(resnet_files):
    model = build_model("abn_resnet18", num_classes=10, frame_length=8, frame_size=64, width=16)
    report = inflate_2d_weights(model, resnet_files[18])
    assert not report.taken
    assert ("conv1.weight", (16, 3, 1, 7, 7), (64, 3, 7, 7)) in report.mismatched
    assert "skipped for shape mismatch" in report.summary()


def test_build_model_takes_a_local_2d_file(resnet_files):
    model = build_model("abn_resnet18", num_classes=10, frame_length=8, frame_size=64, pretrained_2d=resnet_files[18])
    w2 = torch.load(resnet_files[18], weights_only=True)["layer1.0.conv1.weight"]
    torch.testing.assert_close(model.layer1[0].conv1.weight[:, :, 1], w2 / 3)


def test_a_2d_file_that_fits_no_tensor_of_the_backbone_is_an_error(resnet_files):
    with pytest.raises(CheckpointError) as caught:
        build_model("abn_resnet18", num_classes=10, frame_length=8, frame_size=64, width=16,
                    pretrained_2d=resnet_files[18])  # fmt: skip
    assert str(caught.value) == (
        f"{resnet_files[18]}: does not fit abn_resnet18's backbone: key 'conv1.weight' has shape [64, 3, 7, 7] in "
        "the file, which does not fit [16, 3, 1, 7, 7] in the model (0 of 100 backbone tensors fit): give "
        "torchvision's ResNet-18 weights with model.width=64, or model.pretrained_2d_strict=false to load the "
        "tensors that fit"
    )


def test_a_2d_file_that_fits_part_of_the_backbone_names_the_first_misfit(resnet_files, tmp_path, caplog):
    """A ResNet-18 file lacking one tensor: an error naming it; with strict off, every other
    tensor loads and the warning says what did not."""
    state = torch.load(resnet_files[18], weights_only=True)
    del state["layer3.1.conv2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"key 'layer3\.1\.conv2\.weight' is missing from the file \(99 of 100 "):
        build_model("resnet18", num_classes=10, frame_length=8, frame_size=64, pretrained_2d=path)
    with caplog.at_level(logging.WARNING):
        model = build_model(
            "resnet18", num_classes=10, frame_length=8, frame_size=64, pretrained_2d=path, pretrained_2d_strict=False
        )
    torch.testing.assert_close(model.layer4[1].conv2.weight[:, :, 1], state["layer4.1.conv2.weight"] / 3)
    assert (
        "model.pretrained_2d_strict=false: inflated 99 tensors from 2D weights; 23 kept their initialisation; "
        "first misfit: key 'layer3.1.conv2.weight' is missing from the file" in caplog.text
    )


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache, and downloads refused at once (a closed local proxy)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return home


@pytest.mark.parametrize("name,depth", [("abn_resnet18", 18), ("resnet50", 50)])
def test_imagenet_weights_come_through_torchvision_and_its_cache(resnet_files, offline_torch_home, name, depth):
    """`pretrained_2d="imagenet"` reads torchvision's IMAGENET1K_V1 file from its cache, where
    a constructed state dict stands in for the download."""
    from stabn.models.inflate import imagenet_weights_file

    cached = imagenet_weights_file(depth)
    assert cached.parent == offline_torch_home / "hub" / "checkpoints"
    assert cached.name == {18: "resnet18-f37072fd.pth", 50: "resnet50-0676ba61.pth"}[depth]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet_files[depth].read_bytes())

    model = build_model(name, num_classes=10, frame_length=8, frame_size=64, pretrained_2d="imagenet")
    state_2d, state_3d = torch.load(resnet_files[depth], weights_only=True), model.state_dict()
    inflated = 0
    for key, w2 in state_2d.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        w3 = state_3d[key]
        expected = w2.unsqueeze(2).repeat(1, 1, w3.shape[2], 1, 1) / w3.shape[2] if w2.dim() == 4 else w2
        torch.testing.assert_close(w3, expected, rtol=0, atol=0)
        inflated += 1
    assert inflated == sum(1 for k in state_2d if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))


def test_imagenet_weights_missing_offline_name_the_file_and_the_cache(offline_torch_home):
    from stabn.errors import CheckpointError

    with pytest.raises(CheckpointError) as caught:
        build_model("abn_resnet18", num_classes=10, frame_length=8, frame_size=64, pretrained_2d="imagenet")
    message = str(caught.value)
    assert message.startswith("ImageNet weights resnet18-f37072fd.pth are not in torchvision's cache ")
    assert str(offline_torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "\n" not in message
    assert not (offline_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()
