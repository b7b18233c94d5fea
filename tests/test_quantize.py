"""``export --int8``: a real trained checkpoint quantised by onnxruntime, calibrated on its trial's images, and its
reported check recomputed here from the written files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import main_efficientnet
from efficientnet.cli import main
from efficientnet.export import onnx_session
from efficientnet.preprocess import eval_transform, load_image
from efficientnet.spec import ArchSpec
from trial_process import one_error_line

# a small model trained well enough that its logits rank the classes (about 79 % top-1; int8 agreed with fp32 on
# 90 % of the images; at width 0.25 and 1 epoch, about 35 % top-1 left the top classes so close that it agreed on
# 65-78 %)
SMALL = ["--arch", "lite0", "--width", "0.5", "--resolution", "32", "--weights", "lite0", "--epochs", "2",
         "--opt", "adamw", "--lr", "0.003", "--batch-size", "16", "--threads", "1", "--no-latency"]


@pytest.fixture(scope="module")
def trained(digits: Path, tmp_path_factory) -> Path:
    """A trial's checkpoint: 2 epochs on the digits demo (train/ and val/, classes 0-9)."""
    out = tmp_path_factory.mktemp("run")
    assert main_efficientnet.main(["--data", str(digits), "--output-dir", str(out), *SMALL]) == 0
    return out / "model_best.pth.tar"


def export(capsys, *args) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_int8_model_is_calibrated_on_the_trials_images_and_its_check_is_what_the_files_give(
        trained: Path, digits: Path, tmp_path: Path, capsys):
    code, out, err = export(capsys, trained, "--out", tmp_path, "--int8", "--calibration-images", 40, "--json")
    assert code == 0, err
    result = json.loads(out)
    entry = result["int8"]
    fp32, int8 = tmp_path / "model_best.onnx", tmp_path / "model_best.int8.onnx"
    assert entry["file"] == int8.name and entry["bytes"] == int8.stat().st_size
    assert "QDQ, int8 weights per output channel, uint8 activations, percentile calibration" in entry["quantization"]
    assert entry["calibration"] == "32 training images of " + str(digits)  # whole batches of 16
    # int8 weights per channel and quantised activations, in the QDQ format; a third of the fp32 file's size
    model = onnx.load(str(int8))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) > 20 and entry["bytes"] < 0.45 * fp32.stat().st_size
    # the check: the trial's 359 validation images through both files, recomputed here
    spec = ArchSpec.parse(json.loads((tmp_path / "model_best.json").read_text())["arch"])
    transform = eval_transform(spec)
    files = sorted((digits / "val").glob("*/*.png"))
    images = np.stack([transform(load_image(f)).numpy() for f in files])
    labels = np.array([int(f.parent.name) for f in files])
    tops = [onnx_session(path).run(["logits"], {"input": images})[0].argmax(axis=1) for path in (fp32, int8)]
    check = entry["check"]
    assert check["images"] == len(files) == 359 and check["images_from"] == f"359 validation images of {digits}"
    assert check["top1_fp32"] == pytest.approx(100 * (tops[0] == labels).mean(), abs=0.01)
    assert check["top1_int8"] == pytest.approx(100 * (tops[1] == labels).mean(), abs=0.01)
    assert check["agreement"] == pytest.approx((tops[0] == tops[1]).mean(), abs=1e-4) and check["agreement"] > 0.8
    assert check["latency_ms_fp32"] > 0 and check["latency_ms_int8"] > 0
    # the checkpoint's trial-validated top-1 is fp32's: the same model, the same images
    trial = json.loads((trained.parent / "result.json").read_text())
    assert check["top1_fp32"] == pytest.approx(trial["top1"], abs=0.01)
    sidecar = json.loads((tmp_path / "model_best.json").read_text())
    assert sidecar["exports"]["onnx-int8"] == entry and "onnx" in sidecar["exports"]
    # the text output, and a later fp32-only export keeps the int8 entry of the same model
    code, out, err = export(capsys, trained, "--out", tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "model_best.json").read_text())["exports"]["onnx-int8"] == entry


def test_weights_without_their_trials_data_are_calibrated_on_a_folder_and_checked_by_agreement(
        digits: Path, tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(digits / "val" / "3", folder / "some" / "where")
    code, out, err = export(capsys, "lite0", "--out", tmp_path / "out", "--int8", "--calibration", folder,
                            "--calibration-images", 8, "--exporter", "legacy")
    assert code == 0, err
    assert f"calibrated on 8 images of {folder}" in out
    assert f"int8 check on the calibration images (8 images of {folder}): same top-1 class as fp32 for" in out
    entry = json.loads((tmp_path / "out" / "lite0.json").read_text())["exports"]["onnx-int8"]
    assert entry["check"]["top1_int8"] is None and entry["check"]["images"] == 8


@pytest.mark.parametrize("args, message", [
    (["{ckpt}", "--int8", "--format", "torchscript"], "--int8 makes an int8 ONNX model; use it with --format onnx, "
     "not torchscript"),
    (["lite0", "--int8"], "the checkpoint does not record its trial's data to calibrate on; pass --calibration "
     "FOLDER with images like those the model will see"),
    (["{ckpt}", "--int8", "--calibration", "{tmp}/none"], "--calibration {tmp}/none: not a folder; give a folder of "
     "images like those the model will see"),
    (["{ckpt}", "--int8", "--calibration", "{tmp}"], "--calibration {tmp} holds no image files (.jpg, .png, ...); "
     "give a folder of images like those the model will see"),
    (["{ckpt}", "--int8", "--calibration-images", "0"], "--calibration-images must be at least 1, got 0"),
])
def test_bad_int8_input_is_one_error_line_before_any_file_is_written(args, message, trained: Path, tmp_path: Path,
                                                                     capsys):
    fill = {"ckpt": trained, "tmp": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    code, _, err = export(capsys, *(a.format(**fill) for a in args), "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) == "error: " + message.format(**fill)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_predict_runs_the_exported_onnx_models_with_their_sidecars_classes_and_preprocessing(
        trained: Path, digits: Path, tmp_path: Path, capsys):
    """predict --weights model.onnx (or model.int8.onnx) runs the file in onnxruntime, as it will be deployed: the
    fp32 file gives the checkpoint's own probabilities, and the int8 one the classes the export's check counted."""
    code, out, err = export(capsys, trained, "--out", tmp_path, "--int8", "--calibration-images", 32, "--json")
    assert code == 0, err
    agreement = json.loads(out)["int8"]["check"]["agreement"]
    images = sorted((digits / "val").glob("*/*.png"))[::6]

    def predict(weights) -> list[dict]:
        code = main(["predict", "--weights", str(weights), "--topk", "10", "--json", *map(str, images)])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    torch_run, fp32_run, int8_run = (predict(w) for w in (trained, tmp_path / "model_best.onnx",
                                                          tmp_path / "model_best.int8.onnx"))
    assert len(torch_run) == len(fp32_run) == len(int8_run) == len(images) == 60
    for a, b in zip(torch_run, fp32_run):
        assert a["image"] == b["image"]
        assert [p["name"] for p in a["predictions"]][:1] == [p["name"] for p in b["predictions"]][:1]
        probs = {p["name"]: p["probability"] for p in b["predictions"]}
        for p in a["predictions"]:
            assert probs[p["name"]] == pytest.approx(p["probability"], abs=1e-4)
    assert {p["name"] for r in int8_run for p in r["predictions"]} <= {str(i) for i in range(10)}
    same = np.mean([a["predictions"][0]["name"] == b["predictions"][0]["name"] for a, b in zip(fp32_run, int8_run)])
    assert same >= agreement - 0.15  # a sixth of the images the check ran on
    # an ONNX file without its sidecar, or one the sidecar does not list, is one error line
    shutil.copy(tmp_path / "model_best.onnx", tmp_path / "renamed.onnx")
    shutil.copy(tmp_path / "model_best.json", tmp_path / "renamed.json")
    shutil.copy(tmp_path / "model_best.onnx", tmp_path / "alone.onnx")
    for name, message in (("alone.onnx", "alone.onnx has no sidecar alone.json beside it (export writes one, with "
                                         "its classes and preprocessing); export the checkpoint again, or pass the "
                                         "checkpoint"),
                          ("renamed.onnx", "renamed.json does not describe renamed.onnx (it lists model_best.int8.onnx, "
                                           "model_best.onnx); export the checkpoint again")):
        code = main(["predict", "--weights", str(tmp_path / name), str(images[0])])
        assert code == 2 and one_error_line(capsys.readouterr().err) == f"error: {message}"
    code = main(["predict", "--weights", str(tmp_path / "model_best.onnx"), "--arch", "lite0", str(images[0])])
    assert code == 2 and "--arch: an ONNX model's architecture is in its sidecar" in one_error_line(
        capsys.readouterr().err)


def test_evaluate_scores_the_exported_onnx_models_as_the_checkpoint_and_the_int8_check(
        trained: Path, digits: Path, tmp_path: Path, capsys):
    """evaluate model.onnx / model.int8.onnx: the fp32 file scores what the checkpoint scores on the same images, and
    the int8 file the top-1 that the export's check reported for it on them (the trial's validation images)."""
    code, out, err = export(capsys, trained, "--out", tmp_path, "--int8", "--calibration-images", 32, "--json")
    assert code == 0, err
    check = json.loads(out)["int8"]["check"]

    def evaluate(model, *extra) -> dict:
        code = main(["evaluate", str(model), str(digits / "val"), "--json", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    torch_scores, fp32_scores, int8_scores = (evaluate(m) for m in (trained, tmp_path / "model_best.onnx",
                                                                     tmp_path / "model_best.int8.onnx"))
    for key in ("top1", "top5", "f1", "precision", "recall", "loss", "auc"):
        assert fp32_scores["metrics"][key] == pytest.approx(torch_scores["metrics"][key], abs=1e-4), key
    assert fp32_scores["confusion"] == torch_scores["confusion"]
    assert fp32_scores["validation"] == torch_scores["validation"]  # from the sidecar's record of the checkpoint
    assert int8_scores["images"] == check["images"] == 359
    assert int8_scores["metrics"]["top1"] == pytest.approx(check["top1_int8"], abs=0.01)
    for extra, words in ((["--split", "val"], "--split val needs the checkpoint"),
                         (["--heatmaps", str(tmp_path / "h.png")], "--heatmaps needs the PyTorch checkpoint")):
        code = main(["evaluate", str(tmp_path / "model_best.onnx"), *extra])
        assert code == 2 and words in one_error_line(capsys.readouterr().err)
