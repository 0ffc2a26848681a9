"""`stabn-demo` on small videos: what it prints and writes with each kind of model and method,
and the one-line errors (exit code 2) of unusable videos, of methods that do not fit the model
and of a peer method without Captum."""

import json
import sys
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import stabn
from helpers import (
    encode_video,
    lossless_codec,
    lossy_codec,
    run_console_script,
    textured_frames,
    unusable_videos,
    write_jpeg_folder,
)
from stabn.checkpoint import save_checkpoint
from stabn.commands.demo import main
from stabn.config.schema import EXPLAIN_METHODS
from stabn.data import clip_indices, eval_starts
from stabn.data.synthetic import CLASS_NAMES
from stabn.interpret.visualize import enlarge, header_height
from stabn.video_report import write_video_report

av = pytest.importorskip("av")

T, S, N = 16, 56, 32  # the quick-start model's clip and crop; a 32-frame video


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    """Checkpoints of the quick-start architecture (untrained), with and without an attention
    branch, and a 32-frame video at 29.97 fps, encoded losslessly from its JPEG frames folder."""
    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    paths = {}
    for name in ("abn_resnet18", "resnet18"):
        model = stabn.build_model(name, num_classes=8, frame_length=T, frame_size=S, width=8, class_names=CLASS_NAMES)
        paths[name] = root / f"{name}.pt"
        save_checkpoint(paths[name], model, model.spec.to_dict())
    decoded = write_jpeg_folder(root / "frames", textured_frames(N, 64, 80))
    codec = lossless_codec(".mp4") or lossless_codec()
    if codec is None:
        pytest.skip("this PyAV's FFmpeg has no lossless encoder (libx264rgb, ffv1)")
    video = encode_video(root / f"clip{codec[0]}", decoded, Fraction(30000, 1001), *codec[1:])
    return SimpleNamespace(root=root, abn=paths["abn_resnet18"], baseline=paths["resnet18"], video=video)


def centre_clip():
    return [clip_indices(eval_starts(N, T)[0], N, T)]


def one_error_line(stderr: str, *names) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert all(str(name) in lines[0] for name in names), lines[0]
    return lines[0]


@pytest.mark.slow
def test_demo_prints_both_branches_and_writes_readable_pictures_and_the_numbers(demo_inputs, tmp_path):
    d = demo_inputs
    out = tmp_path / "out"
    proc = run_console_script("stabn-demo", [d.video, "--checkpoint", d.abn, "--out", out, "--topk", "3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The same frames as a folder give the same prediction (in this process: up to threading).
    expected = stabn.predict(stabn.load_pretrained(d.abn), d.root / "frames", topk=3)
    for name, prob in zip(expected.names + expected.att_names, expected.probs + expected.att_probs):
        assert f"{prob:.3f}  {name}" in proc.stdout, proc.stdout
    assert "perception branch" in proc.stdout and "attention branch" in proc.stdout
    assert f"frames {centre_clip()[0][0]}-{centre_clip()[0][-1]}" in proc.stdout
    assert "maps: ST-ABN attention\n" in proc.stdout

    report = json.loads((out / "prediction.json").read_text())
    assert report["video"] == str(d.video) and report["checkpoint"] == str(d.abn)
    assert report["frame_indices"] == expected.frame_indices == centre_clip()
    assert [r["name"] for r in report["perception"]] == expected.names
    assert [r["prob"] for r in report["perception"]] == pytest.approx(expected.probs, abs=1e-5)
    assert [r["class"] for r in report["attention"]] == expected.att_classes
    assert [r["prob"] for r in report["attention"]] == pytest.approx(expected.att_probs, abs=1e-5)
    temporal = report["temporal_attention"]
    assert temporal["frames"] == centre_clip()[0] and len(temporal["values"]) == T
    assert all(0 <= v <= 1 for v in temporal["values"])
    assert report["video_info"]["frames"] == N and report["video_info"]["fps"] == pytest.approx(30000 / 1001)
    assert (report["method"], report["layer"]) == ("attention", None)

    # Every picture draws the 56 px frames at 224 px (4x), under the prediction and colour bar.
    sheet = Image.open(out / "attention.png")
    assert sheet.size == (8 * 224, header_height(2) + 2 * (20 + 224))
    gif = Image.open(out / "attention.gif")
    assert gif.n_frames == T and gif.width >= 224 and gif.height >= header_height(3) + 20 + 224
    with av.open(str(out / "attention.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == report["files"]["mp4_codec"]
    assert len(frames) == T and frames[0].shape[:2] == (gif.height + gif.height % 2, gif.width + gif.width % 2)


@pytest.mark.slow
def test_a_resnet_checkpoint_gets_grad_cam_pictures_and_says_so(demo_inputs, tmp_path):
    d = demo_inputs
    out = tmp_path / "out"
    proc = run_console_script("stabn-demo", [d.video, "--checkpoint", d.baseline, "--out", out, "--method", "gradcam"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = stabn.predict(stabn.load_pretrained(d.baseline), d.video)
    assert all(name in proc.stdout for name in expected.names)
    assert f"maps: Grad-CAM at layer4 of {expected.names[0]}\n" in proc.stdout
    report = json.loads((out / "prediction.json").read_text())
    assert report["attention"] is None and (report["method"], report["layer"]) == ("gradcam", "layer4")
    assert [r["class"] for r in report["perception"]] == expected.classes
    values = report["temporal_attention"]["values"]
    assert len(values) == T and min(values) >= 0 and max(values) == pytest.approx(1)
    names = ["attention.gif", "attention.mp4", "attention.png", "prediction.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    # One branch and the map's line over the 56 px frames drawn at 224 px.
    assert Image.open(out / "attention.png").size == (8 * 224, header_height(2) + 2 * (20 + 224))
    assert Image.open(out / "attention.gif").n_frames == T


def test_methods_that_do_not_fit_end_with_one_line(demo_inputs, tmp_path, capsys):
    torch.set_num_threads(1)
    frames, d = str(demo_inputs.root / "frames"), demo_inputs
    bad = [
        ([frames, "--checkpoint", str(d.baseline), "--method", "attention"], ["resnet18 has no attention branch"]),
        ([frames, "--checkpoint", str(d.abn), "--method", "input_gradient", "--layer", "layer4"], ["Grad-CAM's layer"]),
        ([frames, "--checkpoint", str(d.abn), "--method", "gradcam", "--layer", "layer9"], ["no layer 'layer9'"]),
        ([frames, "--checkpoint", str(d.abn), "--method", "gradcm"], ["--method", "gradcm"]),
    ]  # fmt: skip
    for args, says in bad:
        with pytest.raises(SystemExit) as stopped:
            main(args + ["--out", str(tmp_path / "out")])
        assert stopped.value.code == 2, args
        one_error_line(capsys.readouterr().err, *says)
    assert not (tmp_path / "out").exists()


def test_without_captum_a_resnet_gets_predictions_and_json_then_one_error_line(
    demo_inputs, tmp_path, capsys, monkeypatch
):
    torch.set_num_threads(1)
    monkeypatch.setitem(sys.modules, "captum", None)
    d, out = demo_inputs, tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        main([str(d.root / "frames"), "--checkpoint", str(d.baseline), "--out", str(out)])
    assert stopped.value.code == 2
    one_error_line(capsys.readouterr().err, "pip install -e .[explain]", "Grad-CAM at layer4", d.baseline)
    report = json.loads((out / "prediction.json").read_text())
    assert report["method"] is None and report["temporal_attention"] is None
    expected = stabn.predict(stabn.load_pretrained(d.baseline), d.root / "frames")
    assert [r["class"] for r in report["perception"]] == expected.classes
    assert sorted(p.name for p in out.iterdir()) == ["prediction.json"]  # no pictures


def test_unusable_videos_end_the_demo_with_one_line_naming_the_file(demo_inputs, tmp_path, capsys):
    torch.set_num_threads(1)
    for name, (path, says) in unusable_videos(tmp_path / "bad").items():
        with pytest.raises(SystemExit) as stopped:
            main([str(path), "--checkpoint", str(demo_inputs.abn), "--out", str(tmp_path / name)])
        assert stopped.value.code == 2, name
        one_error_line(capsys.readouterr().err, path, says)


def test_a_folder_of_videos_is_not_a_frames_folder(demo_inputs, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.webm").write_bytes(demo_inputs.video.read_bytes())
    with pytest.raises(SystemExit) as stopped:
        main([str(folder), "--checkpoint", str(demo_inputs.abn)])
    assert stopped.value.code == 2
    one_error_line(capsys.readouterr().err, folder, "give one video", folder / "a.webm")


def test_a_frames_folder_works_in_process_too(demo_inputs, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        main([str(demo_inputs.root / "frames"), "--checkpoint", str(demo_inputs.abn), "--out", str(out)])
    assert stopped.value.code == 0
    report = json.loads((out / "prediction.json").read_text())
    assert report["frame_indices"] == centre_clip() and report["video_info"]["codec"] == "jpeg"
    assert np.asarray(Image.open(out / "attention.png")).shape[1] == 8 * 224


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


@pytest.mark.slow
def test_every_method_draws_a_camera_sized_lossy_video_readably(demo_inputs, tmp_path):
    """A 320x240 video at 25 fps in H.264 (VP9 where FFmpeg lacks it), decoded with its
    codec's losses: each method writes its pictures of the same frames, the PNG is the sheet
    `explain` drew, the maps differ from method to method, and under every map the frame stays
    visible (its tile follows the frame's light and dark)."""
    torch.set_num_threads(1)
    suffix, codec, pix_fmt = lossy_codec()
    video = encode_video(tmp_path / f"camera{suffix}", textured_frames(40, 240, 320, seed=3), 25, codec, pix_fmt)
    reports = {}
    for method in EXPLAIN_METHODS:
        out = tmp_path / method
        reports[method] = r = write_video_report(video, demo_inputs.abn, out=out, method=method, topk=3)
        e = r.explanation
        report = json.loads((out / "prediction.json").read_text())
        assert report["method"] == method and report["video_info"]["codec"] == ("h264" if suffix == ".mp4" else "vp9")
        assert (report["video_info"]["width"], report["video_info"]["height"]) == (320, 240)
        assert np.array_equal(np.asarray(Image.open(out / "attention.png").convert("RGB")), np.asarray(e.image))
        assert Image.open(out / "attention.gif").n_frames == T
        big = luminance(enlarge(e.frames, 224))
        for t, tile in enumerate(e.overlays):
            shown = luminance(np.asarray(tile)[-224:])  # the frame under the map, below its bar
            assert np.corrcoef(shown.ravel(), big[t].ravel())[0, 1] > 0.5, (method, t)
    first = reports["attention"].explanation
    for method, r in reports.items():
        assert np.array_equal(r.explanation.frames, first.frames), method
        assert r.prediction.classes == first.prediction.classes, method
    for a in EXPLAIN_METHODS:
        for b in EXPLAIN_METHODS:
            if a < b:
                assert not np.allclose(reports[a].explanation.spatial, reports[b].explanation.spatial), (a, b)
