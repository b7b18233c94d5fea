"""Export: ONNX (checked with onnxruntime) and TorchScript files of a tiny checkpoint, their sidecar, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from efficientnet import ArchSpec, build_model
from efficientnet.cli import main
from efficientnet.export import ExportError, export_checkpoint, onnx_session, read_source
from efficientnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from trial_process import one_error_line

RES = 32
CLASSES = [f"class{i}" for i in range(10)]


def tiny(base: str) -> ArchSpec:
    from efficientnet import preset

    return preset(base).replace(width=0.2, depth=0.2, resolution=RES)


def trained_like(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A tiny model whose BatchNorm statistics and weights are not at their init values, so logits are O(1)."""
    torch.manual_seed(seed)
    model = build_model(spec, len(CLASSES))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model._fc.weight.normal_(0, 1.0)
    return model.eval()


def save_checkpoint(path: Path, spec: ArchSpec, model: torch.nn.Module, with_spec: bool = True) -> Path:
    ckpt = {"model": model.state_dict(), "epoch": 4, "args": {"classes": CLASSES, "lr": 0.01}, "eval_metric": "f1",
            "best_score": 71.5, "best_epoch": 3}
    if with_spec:
        ckpt["spec"] = spec.to_dict()
    torch.save(ckpt, path)
    return path


def run_cli(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "efficientnet", "export", *args], cwd=root, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def lite_ckpt(tmp_path_factory):
    spec = tiny("lite0")
    model = trained_like(spec)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model_best.pth.tar", spec, model)
    return path, spec, model


def test_onnx_export_through_the_cli_matches_pytorch(root, lite_ckpt, tmp_path):
    path, spec, model = lite_ckpt
    out = run_cli(root, str(path), "--format", "onnx", "--out", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    onnx_path = tmp_path / "model_best.onnx"
    assert result["model_path"] == str(onnx_path) and onnx_path.is_file()
    assert result["max_abs_diff"] <= 1e-3

    # an independent run: batch 3 (export traced batch 2), onnxruntime vs the PyTorch model we saved
    import onnx

    onnx.checker.check_model(str(onnx_path))
    torch.manual_seed(1)
    x = torch.randn(3, 3, RES, RES)
    with torch.inference_mode():
        want = model(x).numpy()
    assert want.std() > 0.1  # logits large enough that a wrong graph could not pass by being near zero
    session = onnx_session(onnx_path)
    got = session.run(["logits"], {"input": x.numpy()})[0]
    assert got.shape == (3, len(CLASSES))
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    # and a single image, through the dynamic batch axis
    np.testing.assert_allclose(session.run(["logits"], {"input": x[:1].numpy()})[0], want[:1], atol=1e-3, rtol=0)

    meta = json.loads((tmp_path / "model_best.json").read_text())
    assert ArchSpec.from_dict(meta["spec"]) == spec and ArchSpec.parse(meta["arch"]) == spec
    assert meta["num_classes"] == 10 and meta["class_names"] == CLASSES
    assert meta["preprocess"]["mean"] == list(LITE_MEAN) and meta["preprocess"]["std"] == list(LITE_STD)
    assert meta["preprocess"]["center_crop"] == [RES, RES] and meta["input"]["channel_order"] == "RGB"
    assert meta["input"]["shape"] == ["batch", 3, RES, RES]
    assert meta["format"] == "onnx" and meta["opset"] == 18
    # the default exporter, auto: dynamo, which must work on the newest supported torch; on an older torch whose
    # dynamo exporter fails beside this onnxscript, the legacy one, and a note saying so
    newest = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 14)
    if newest or meta["exporter"] != "torch.onnx.export (legacy)":
        assert meta["exporter"] == result["exporter"] == "torch.onnx.export (dynamo)" and result["note"] is None
    else:
        assert f"note: the dynamo ONNX exporter failed on torch {torch.__version__}" in out.stderr
    assert (meta["source"]["epoch"], meta["source"]["best_epoch"]) == (4, 3)
    assert (meta["source"]["best_score"], meta["source"]["eval_metric"]) == (71.5, "f1")  # what the score measures


def test_torchscript_export_reloads_and_matches(lite_ckpt, tmp_path):
    path, spec, model = lite_ckpt
    result = export_checkpoint(path, "torchscript", out_dir=tmp_path)
    assert result.max_abs_diff <= 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
        loaded = torch.jit.load(result.model_path)
    x = torch.randn(3, 3, RES, RES)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=0)
    meta = json.loads(Path(result.sidecar_path).read_text())
    assert meta["format"] == "torchscript" and meta["file"] == "model_best.torchscript.pt"
    assert ArchSpec.from_dict(meta["spec"]) == spec


def test_swish_model_without_spec_needs_arch_and_uses_imagenet_normalisation(tmp_path):
    spec = tiny("b0")
    model = trained_like(spec, seed=2)
    path = save_checkpoint(tmp_path / "checkpoint.pth.tar", spec, model, with_spec=False)
    with pytest.raises(ExportError, match="--arch"):
        read_source(path)
    result = export_checkpoint(path, "onnx", arch=spec, exporter="legacy", stem="found")
    assert Path(result.model_path) == tmp_path / "found.onnx"  # default: next to the checkpoint
    meta = json.loads((tmp_path / "found.json").read_text())
    assert meta["preprocess"]["mean"] == list(IMAGENET_MEAN) and meta["preprocess"]["std"] == list(IMAGENET_STD)
    assert "legacy" in meta["exporter"] and meta["check"]["max_abs_diff"] <= 1e-3
    x = torch.randn(2, 3, RES, RES)
    with torch.inference_mode():
        want = model(x).numpy()
    got = onnx_session(result.model_path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_a_failed_check_fails_the_export(lite_ckpt, tmp_path, monkeypatch):
    """The reloaded file computes something else (another model's weights): the export must fail."""
    path, spec, _ = lite_ckpt
    other = trained_like(spec, seed=5)
    other.set_swish(memory_efficient=False)
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: other)
    with pytest.raises(ExportError, match="differ from PyTorch's by up to"):
        export_checkpoint(path, "torchscript", out_dir=tmp_path)


def cli(capsys, *args: str) -> str:
    """``main(["export", ...])`` in-process (``python -m efficientnet`` exits with its return value)."""
    code = main(["export", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_error_line(err)


def test_cli_missing_checkpoint(capsys, tmp_path):
    line = cli(capsys, str(tmp_path / "nope.pth.tar"))
    assert "does not exist" in line and "nope.pth.tar" in line
    assert not (tmp_path / "nope.json").exists()


def test_cli_file_that_is_not_a_checkpoint(capsys, tmp_path):
    bogus = tmp_path / "notes.pth.tar"
    bogus.write_text("these are not weights\n")
    assert "cannot read checkpoint" in cli(capsys, str(bogus))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    assert "holds a Tensor" in cli(capsys, str(tensor))
    empty = tmp_path / "empty.pth.tar"
    torch.save({"model": {}, "epoch": 1}, empty)
    assert "no state dict" in cli(capsys, str(empty))
    assert "is not a file" in cli(capsys, str(tmp_path))


def test_cli_unknown_format_and_missing_spec(capsys, lite_ckpt, tmp_path):
    path, spec, model = lite_ckpt
    assert "unknown format 'tflite'" in cli(capsys, str(path), "--format", "tflite")
    assert "unknown ONNX exporter" in cli(capsys, str(path), "--exporter", "jit", "--out", str(tmp_path))
    bare = save_checkpoint(tmp_path / "bare.pth.tar", spec, model, with_spec=False)
    assert "--arch" in cli(capsys, str(bare), "--format", "torchscript")
    assert "do not fit" in cli(capsys, str(bare), "--format", "torchscript", "--arch", "b0")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.onnx"))


def test_framerate_benchmark_smoke(root, tmp_path):
    """bench/framerate.py end to end on one tiny configuration: table, CSV rows for both backends, PNG."""
    import csv

    out = subprocess.run(
        [sys.executable, "bench/framerate.py", "--models", "found", "--spec", str(tiny("lite0")),
         "--resolution-override", "32", "--runs", "3", "--warmup", "0", "--batch", "2", "--exporter", "legacy",
         "--out", str(tmp_path)],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "framerate.csv").open()))
    assert [(r["model"], r["backend"], r["batch"]) for r in rows] == [
        ("found", b, n) for b in ("eager", "onnxruntime-cpu") for n in ("1", "2")
    ]
    assert all(float(r["images_per_s"]) > 0 and float(r["p50_ms"]) <= float(r["p99_ms"]) for r in rows)
    assert {r["resolution"] for r in rows} == {"32"} and float(rows[0]["params_m"]) < 2.0  # the tiny spec given (B0: 5.3)
    assert "| found | 32 |" in out.stdout and (tmp_path / "framerate.png").stat().st_size > 10_000
