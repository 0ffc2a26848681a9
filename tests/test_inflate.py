import pytest
import torch
import torchvision

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
