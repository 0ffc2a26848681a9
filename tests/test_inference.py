import numpy as np
import pytest
import torch

import stabn
from stabn.checkpoint import save_checkpoint
from stabn.interpret.visualize import attention_grid, header_height


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    model = stabn.build_model("abn_resnet18", num_classes=6, frame_length=8, frame_size=224, width=4)
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, model, model.spec.to_dict())
    return stabn.load_pretrained(path)


def test_predict_on_a_frames_folder_equals_predict_on_its_clip(saved_model, fixtures_dir):
    video = fixtures_dir / "preprocess" / "frames" / "101"
    names = [f"class {i}" for i in range(6)]
    from_dir = stabn.predict(saved_model, video, topk=3, class_names=names)
    from_clip = stabn.predict(saved_model, stabn.load_clip(video, 8, 224), topk=3, class_names=names)
    assert from_dir == from_clip
    assert len(from_dir.classes) == 3 and from_dir.names == [names[c] for c in from_dir.classes]
    assert from_dir.probs == sorted(from_dir.probs, reverse=True) and sum(from_dir.probs) <= 1 + 1e-6
    with torch.no_grad():
        out = saved_model(stabn.load_clip(video, 8, 224).unsqueeze(0))
    expected = out.logits.softmax(1)[0].topk(3)
    assert from_dir.classes == expected.indices.tolist()
    assert from_dir.probs == pytest.approx(expected.values.tolist())
    assert from_dir.att_classes == out.att_logits.softmax(1)[0].topk(3).indices.tolist()


def test_explain_gives_maps_at_clip_size_and_pictures(saved_model, fixtures_dir):
    video = fixtures_dir / "preprocess" / "frames" / "101"
    e = stabn.explain(saved_model, video)
    assert e.spatial.shape == (8, 224, 224) and e.temporal.shape == (8,)
    assert 0 <= e.spatial.min() and e.spatial.max() <= 1
    assert e.frames.shape == (8, 224, 224, 3) and e.frames.dtype.name == "uint8"
    assert len(e.overlays) == 8 and e.overlays[0].size == (224, 20 + 224)
    # The original's layout, under a header naming both branches' prediction above the colour bar.
    grid = attention_grid([np.asarray(o) for o in e.overlays])
    assert grid.shape == (20 + 224, 8 * 224, 3)
    assert e.image.size == (8 * 224, header_height(2) + 20 + 224)
    assert np.array_equal(np.asarray(e.image)[header_height(2) :], grid)
    with torch.no_grad():
        out = saved_model(stabn.load_clip(video, 8, 224).unsqueeze(0))
    assert e.temporal.tolist() == pytest.approx(out.temporal_attention.flatten().tolist())


def test_attention_needs_an_attention_branch_and_a_resnet_gets_grad_cam():
    model = stabn.build_model("resnet18", num_classes=4, frame_length=8, frame_size=32, width=4)
    with pytest.raises(ValueError) as caught:
        stabn.explain(model, torch.randn(3, 8, 32, 32), method="attention")
    assert str(caught.value) == (
        "method 'attention' needs an ST-ABN model (abn_resnet*): resnet18 has no attention branch; give method one "
        "of gradcam, input_gradient, integrated_gradients"
    )
    e = stabn.explain(model, torch.randn(3, 8, 32, 32))
    assert (e.method, e.layer) == ("gradcam", "layer4")
    pred = stabn.predict(model, torch.randn(3, 8, 32, 32), topk=2)
    assert pred.att_classes is None and len(pred.classes) == 2


@pytest.mark.parametrize("call", [stabn.predict, stabn.explain])
def test_class_names_that_do_not_name_every_class(saved_model, call):
    clip = torch.randn(3, 8, 224, 224)
    for names in (["a", "b", "c"], [str(i) for i in range(7)]):
        with pytest.raises(ValueError) as caught:
            call(saved_model, clip, class_names=names)
        assert str(caught.value) == (
            f"class_names has {len(names)} names for the model's 6 classes: give one name per class, in class "
            "order, or leave it out to use the model's own"
        )
