"""Checkpoints named by URL (served by a local HTTP server, never the internet), torch.hub's
entries in hubconf.py, and a model's spec as text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import stabn
from helpers import FileServer
from stabn.checkpoint import save_checkpoint
from stabn.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def _model(name="abn_resnet18", **kwargs):
    kwargs = {"num_classes": 4, "frame_length": 4, "frame_size": 32, "width": 4, **kwargs}
    model = stabn.build_model(name, **kwargs)
    with torch.no_grad():  # weights unlike a fresh build's
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    files = {}
    for name, model in (("stabn.pt", _model(class_names=["a", "b", "c", "d"])), ("resnet.pt", _model("resnet18"))):
        save_checkpoint(out / name, model, model.spec.to_dict())
        files[name] = (out / name).read_bytes()
    return files


@pytest.fixture
def server(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    digest = hashlib.sha256(checkpoints["stabn.pt"]).hexdigest()
    served = {
        "/stabn.pt": checkpoints["stabn.pt"],
        "/resnet.pt": checkpoints["resnet.pt"],
        f"/named-{digest[:10]}.pt": checkpoints["stabn.pt"],
        "/named-0123456789.pt": checkpoints["stabn.pt"],  # a hash in the name that is not the file's
        "/cut.pt": checkpoints["stabn.pt"],
    }
    files = FileServer(served, cut_short=("/cut.pt",))
    files.digest = digest
    files.cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    yield files
    files.close()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_url_downloads_once_into_the_hub_cache(server, tmp_path, checkpoints):
    (tmp_path / "local.pt").write_bytes(checkpoints["stabn.pt"])
    local = stabn.load_pretrained(tmp_path / "local.pt")
    first = stabn.load_pretrained(server.url + "/stabn.pt", progress=False)
    again = stabn.load_pretrained(server.url + "/stabn.pt", sha256=server.digest.upper(), progress=False)
    assert _same_weights(first, local) and _same_weights(again, local)
    assert first.spec == local.spec and first.spec.class_names == ("a", "b", "c", "d")
    assert server.requests["/stabn.pt"] == 1  # the second load came from the cache
    assert sorted(p.name for p in server.cache.iterdir()) == ["stabn.pt"]
    assert (server.cache / "stabn.pt").read_bytes() == checkpoints["stabn.pt"]


def test_the_hash_a_file_name_carries_is_checked(server):
    name = f"named-{server.digest[:10]}.pt"
    assert stabn.load_pretrained(f"{server.url}/{name}", progress=False).spec.name == "abn_resnet18"
    with pytest.raises(CheckpointError) as e:
        stabn.load_pretrained(server.url + "/named-0123456789.pt", progress=False)
    assert str(e.value) == (
        f"{server.url}/named-0123456789.pt: the download does not match SHA-256 0123456789 "
        f"(got {server.digest}); nothing was cached"
    )
    assert sorted(p.name for p in server.cache.iterdir()) == [name]


def test_a_wrong_sha256_caches_nothing_and_a_cached_file_is_checked_too(server):
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match=f"does not match SHA-256 {wrong} .*nothing was cached"):
        stabn.load_pretrained(server.url + "/stabn.pt", sha256=wrong, progress=False)
    assert list(server.cache.iterdir()) == []
    stabn.load_pretrained(server.url + "/stabn.pt", progress=False)
    with pytest.raises(CheckpointError, match=r"the cached .*stabn.pt does not match SHA-256 0{64}; delete it"):
        stabn.load_pretrained(server.url + "/stabn.pt", sha256=wrong, progress=False)
    with pytest.raises(CheckpointError, match="is not a SHA-256 digest"):
        stabn.load_pretrained(server.url + "/stabn.pt", sha256="abc", progress=False)


def test_failed_downloads_are_one_line_naming_the_url_and_leave_no_file(server):
    cases = {
        server.url + "/missing.pt": "download failed: HTTP 404 Not Found",
        server.url + "/cut.pt": "download cut short: ",
        "http://127.0.0.1:9/stabn.pt": "download failed: [Errno 111] Connection refused",
        server.url + "/": "the URL names no file",
    }
    for url, message in cases.items():
        with pytest.raises(CheckpointError) as e:
            stabn.load_pretrained(url, progress=False)
        line = str(e.value)
        assert line.startswith(url + ": ") and message in line and "\n" not in line, line
    assert not server.cache.exists() or list(server.cache.iterdir()) == []  # no partial file either


def test_the_command_line_takes_a_url(server, tmp_path):
    from helpers import run_console_script

    out = run_console_script("stabn-export", ["--checkpoint", server.url + "/missing.pt", "--out", tmp_path / "m.pt2"])
    assert out.returncode == 2 and not (tmp_path / "m.pt2").exists()
    assert out.stderr.strip() == f"error: {server.url}/missing.pt: download failed: HTTP 404 Not Found"


def test_hubconf_has_one_entry_per_model_of_the_zoo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_"))
    assert entries == sorted(stabn.MODEL_NAMES)


def test_torch_hub_load_with_weights_from_a_url(server, checkpoints, tmp_path):
    url = server.url + "/stabn.pt"
    model = torch.hub.load(str(REPO), "abn_resnet18", source="local", weights=url, progress=False)
    (tmp_path / "local.pt").write_bytes(checkpoints["stabn.pt"])
    assert _same_weights(model, stabn.load_pretrained(tmp_path / "local.pt"))
    assert (model.spec.num_classes, model.spec.width, model.spec.frame_size) == (4, 4, 32)
    assert not model.training
    # What the caller says wins over the checkpoint's spec.
    named = torch.hub.load(str(REPO), "abn_resnet18", source="local", weights=url, class_names=list("wxyz"))
    assert named.spec.class_names == tuple("wxyz")
    with pytest.raises(CheckpointError, match=f"^{url}: holds abn_resnet18 weights, not resnet18: load it with the "):
        torch.hub.load(str(REPO), "resnet18", source="local", weights=url)
    with pytest.raises(CheckpointError, match="size mismatch|does not fit|shape"):
        torch.hub.load(str(REPO), "abn_resnet18", source="local", weights=url, num_classes=7)


def test_torch_hub_load_without_weights_builds_the_recipe_model():
    model = torch.hub.load(str(REPO), "resnet18", source="local", width=4)
    assert (model.spec.num_classes, model.spec.frame_length, model.spec.frame_size) == (174, 32, 224)
    small = torch.hub.load(str(REPO), "abn_resnet34", source="local", num_classes=3, frame_length=4, width=4)
    assert small.fc.out_features == 3 and small.spec.frame_length == 4


def test_a_spec_prints_as_a_few_readable_lines():
    spec = _model(class_names=["open", "close", "push", "pull"]).spec
    assert repr(spec) == "ModelSpec(abn_resnet18, 4 classes, 4 frames of 32 px, BGR)"
    assert str(spec).splitlines() == [
        "model      abn_resnet18, width 4",
        "input      4 frames of 32 x 32 px",
        "normalise  BGR, mean (103.5, 116.3, 123.7), std (57.38, 57.12, 58.4)",
        "classes    4: 'open', 'close', 'push', ... (4 in all)",
        "attention  spatial_gate=residual, fusion=concat, norm=none, temporal=mlp",
    ]


def test_eval_takes_a_checkpoint_url(server, tmp_path, checkpoints):
    from stabn.engine.eval_job import resolve_eval_config

    _, path, _ = resolve_eval_config(str(tmp_path / "run"), server.url + "/stabn.pt", [])
    assert path == server.cache / "stabn.pt" and path.read_bytes() == checkpoints["stabn.pt"]
