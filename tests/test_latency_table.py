"""Latency tables: layer keys against the built model, the ``latency-table`` command (resumable), prediction, and
the tuner's ``latency_table`` classArg checking ``max_latency_ms`` without measuring."""

from __future__ import annotations

import json
import subprocess
import sys

import nni
import pytest
from trial_process import one_error_line

from efficientnet.builder import SpecEfficientNet
from efficientnet.latency_table import LatencyTable, LatencyTableError, build_table, layer_keys
from efficientnet.search.costs import estimated_profile
from efficientnet.search.specs import search_space_specs
from efficientnet.spec import ArchSpec, StageChoice, preset
from tuner import EfficientNetTuner

BASE = str(preset("b0").replace(width=0.2, depth=0.5))
TINY_SPACE = {  # 4 candidates: 2 coefficient points meet 2 ± 0.1, times stage 6 with or without SE
    "alpha": {"_type": "choice", "_value": [1.65, 2.0]},
    "beta": {"_type": "choice", "_value": [1.0, 1.1]},
    "gamma": {"_type": "choice", "_value": [1.0]},
    "stage6_se": {"_type": "choice", "_value": [0, 1]},
}
ARGS = ("--base", BASE, "--base-resolution", "32", "--num-classes", "10")


def run(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "efficientnet", *args], cwd=root, capture_output=True, text=True, check=False,
                          timeout=120)


def tiny_specs() -> list[ArchSpec]:
    return search_space_specs(TINY_SPACE, BASE, 32, 10)


@pytest.fixture(scope="module")
def table_file(root, tmp_path_factory):
    """A table of the tiny space built by the command twice: the second run measures nothing new."""
    space = tmp_path_factory.mktemp("lt") / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    out = space.with_name("table.json")
    first = run(root, "latency-table", "--out", str(out), "--search-space", str(space), *ARGS, "--repeats", "3")
    assert first.returncode == 0, first.stderr
    second = run(root, "latency-table", "--out", str(out), "--search-space", str(space), *ARGS, "--repeats", "3",
                 "--no-progress")
    assert second.returncode == 0, second.stderr
    return out, first.stdout, second.stdout


@pytest.mark.parametrize("spec", [
    preset("b0").replace(width=0.25, resolution=32),
    preset("lite0").replace(width=0.1, depth=1.3, resolution=33),
    preset("b0").replace(width=0.15, resolution=40).with_stage_choices(
        {2: StageChoice(kernel=3, expand=4, se=False, repeats_delta=1), 5: StageChoice(kernel=7, se=True)}),
], ids=["b0", "lite0-deeper-odd", "choices"])
def test_keys_match_the_built_model(spec):
    keys = layer_keys(spec, 10)
    model = SpecEfficientNet(spec, 10)
    assert len(keys) == len(model._blocks) + 2
    assert keys[0].startswith(f"stem:{spec.resolution}px:3>{model._conv_stem.out_channels}:")
    assert f":{model._conv_head.in_channels}>{model._conv_head.out_channels}:fc10:" in keys[-1]
    for key, block in zip(keys[1:-1], model._blocks):
        a = block._block_args
        assert f":{a.input_filters}>{a.output_filters}:k{a.kernel_size}:s{a.stride}:e{a.expand_ratio:g}:" in key
        assert ("se0:" in key) != block.has_se


def test_measuring_checks_each_layer_against_the_model_inputs(tmp_path):
    spec = preset("lite0").replace(width=0.1, resolution=33)  # odd sizes: cropped and padded convolutions
    table, measured, distinct = build_table([spec], tmp_path / "t.json", num_classes=10, repeats=2, warmup=1,
                                            progress=False)
    assert measured == distinct == len(set(layer_keys(spec, 10))) and table.predict(spec, 10) > 0


def test_command_covers_the_space_and_resumes(table_file):
    out, first, second = table_file
    table = LatencyTable.load(out)
    keys = {k for spec in tiny_specs() for k in layer_keys(spec, 10)}
    assert set(table.entries) == keys and all(v > 0 for v in table.entries.values())
    assert (table.device, table.threads, table.batch_size, table.backend) == ("cpu", 1, 1, "torch")
    assert f"measured {len(keys)} new" in first and "measured 0 new" in second


def test_predict_sums_the_entries_and_names_a_missing_key():
    spec = tiny_specs()[0]
    keys = layer_keys(spec, 10)
    table = LatencyTable({k: float(i + 1) for i, k in enumerate(dict.fromkeys(keys))})
    index = {k: float(i + 1) for i, k in enumerate(dict.fromkeys(keys))}
    assert table.predict(spec, 10) == pytest.approx(sum(index[k] for k in keys))
    del table.entries[keys[3]]
    with pytest.raises(LatencyTableError, match="re-run python -m efficientnet latency-table") as err:
        table.predict(spec, 10)
    assert keys[3] in str(err.value) and "\n" not in str(err.value)


def test_tuner_checks_max_latency_by_the_table(tmp_path, monkeypatch):
    specs = tiny_specs()
    keys = {k for spec in specs for k in layer_keys(spec, 10)}
    # grows with every coordinate (depth: more blocks, width: channels, SE), as real latencies do
    table = LatencyTable({k: 1.0 + int(k.split(":")[2].split(">")[0]) / 100 + (0.5 if ":se0.25:" in k else 0)
                          for k in keys})
    table.save(tmp_path / "table.json")
    predicted = sorted(table.predict(s, 10) for s in specs)
    threshold = (predicted[1] + predicted[2]) / 2

    def no_measuring(*args, **kwargs):
        raise AssertionError("latency measured although a latency table was given")

    monkeypatch.setattr("efficientnet.search.budgets._cached_latency", no_measuring)
    monkeypatch.setattr("efficientnet.profiler.measure_latency", no_measuring)
    tuner = EfficientNetTuner(strategy="grid", seed=0, base=BASE, base_resolution=32, num_classes=10,
                              max_latency_ms=threshold, latency_table=str(tmp_path / "table.json"),
                              profiler=estimated_profile)
    tuner.update_search_space(TINY_SPACE)
    proposed = []
    with pytest.raises(nni.NoMoreTrialError):
        for pid in range(10):
            p = tuner.generate_parameters(pid)
            proposed.append(ArchSpec.parse(p["arch"]))
            predicted_ms = p["predicted_latency_ms"]  # the target's latency; the trial measures its own machine's
            assert predicted_ms == pytest.approx(table.predict(proposed[-1], 10), abs=1e-3) and "latency_ms" not in p
            assert predicted_ms <= threshold
    assert sorted(table.predict(s, 10) for s in proposed) == predicted[:2]
    assert tuner.checker.rejected >= 1


@pytest.mark.parametrize("content, message", [(None, "does not exist"), ("{", "cannot read"),
                                              ('{"entries": {}}', "is not a latency table")])
def test_unreadable_table_is_a_classarg_error(tmp_path, content, message):
    path = tmp_path / "table.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        EfficientNetTuner(latency_table=str(path), max_latency_ms=5.0)
    assert str(err.value).startswith("classArg latency_table: ") and "\n" not in str(err.value)


def test_profile_prints_the_predicted_latency(root, table_file):
    out, _, _ = table_file
    spec = tiny_specs()[-1]
    result = run(root, "profile", "--arch", str(spec), "--num-classes", "10", "--latency-table", str(out), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["predicted_latency_ms"] == pytest.approx(LatencyTable.load(out).predict(spec, 10))
    assert data["latency_ms"] is None
    missing = run(root, "profile", "--arch", "b0", "--resolution", "32", "--latency-table", str(out))
    assert missing.returncode == 2 and "re-run python -m efficientnet latency-table" in one_error_line(missing.stderr)


@pytest.mark.parametrize("spec", [
    preset("lite0").replace(width=0.1, resolution=33),  # odd sizes: padded stem, cropped stride-2 depthwise
    preset("b0").replace(width=0.15, depth=0.5, resolution=32).with_stage_choices({5: StageChoice(kernel=5)}),
], ids=["lite0-odd", "b0-se-swish"])
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_onnxruntime_backend_times_every_layer_of_the_exported_model(tmp_path, spec, backend):
    """Every layer gets a share of real onnxruntime runs (of the int8 model with onnxruntime-int8); a second table
    of the same model resumes to nothing new, and a torch run on the file is refused."""
    out = tmp_path / "ort.json"
    table, measured, distinct = build_table([spec], out, num_classes=10, repeats=3, warmup=1, progress=False,
                                            backend=backend)
    keys = set(layer_keys(spec, 10))
    assert measured == distinct == len(keys) and set(table.entries) == keys
    assert all(v > 0 for v in table.entries.values())
    loaded = LatencyTable.load(out)
    assert loaded.backend == backend and loaded.predict(spec, 10) == pytest.approx(table.predict(spec, 10))
    assert f"{backend} on cpu" in loaded.describe() and "onnxruntime" in loaded.torch
    assert build_table([spec], out, num_classes=10, repeats=3, warmup=1, progress=False, backend=backend)[1] == 0
    with pytest.raises(LatencyTableError, match=rf"backend {backend} \(not torch\)"):
        build_table([spec], out, num_classes=10, repeats=3, warmup=1, progress=False)


def test_the_int8_backend_times_the_model_export_int8_writes(tmp_path):
    """onnxruntime-int8 times a QDQ model with int8 weights, as export --int8 writes one, at the table's batch."""
    import onnx

    from efficientnet.latency_table import _onnx_file

    spec = preset("lite0").replace(width=0.1, resolution=32)
    path = _onnx_file(spec, 10, 2, tmp_path, int8=True)
    model = onnx.load(str(path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    assert sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in model.graph.initializer) > 10
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]


@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_profile_measures_the_onnxruntime_latency_beside_an_onnxruntime_table(root, tmp_path, backend):
    spec = preset("lite0").replace(width=0.1, resolution=32)
    out = tmp_path / "ort.json"
    build_table([spec], out, num_classes=10, repeats=3, warmup=1, progress=False, backend=backend)
    result = run(root, "profile", "--arch", str(spec), "--num-classes", "10", "--latency-table", str(out),
                 "--latency", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["predicted_latency_ms"] == pytest.approx(LatencyTable.load(out).predict(spec, 10))
    assert data["onnxruntime_latency_ms"] > 0 and data["latency_ms"] > 0
    assert f"{backend} on cpu" in data["latency_table"]


def test_onnxruntime_nodes_are_assigned_to_their_layer():
    from efficientnet.latency_table import _layer_of_nodes

    names = ["/_conv_stem/Pad", "/_swish/Clip_output_0_nchwc", "ReorderOutput_token_1", "/_blocks.0/_swish/Clip",
             "ReorderOutput_token_2", "/_blocks.1/_project_conv/Conv", "ReorderInput", "/_swish_1/Clip",
             "/_avg_pooling/GlobalAveragePool", "ReorderOutput", "/Flatten", "/_fc/Gemm"]
    assert _layer_of_nodes(names, 2) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3]
    with pytest.raises(LatencyTableError, match="block 2, but the model has 2 blocks"):
        _layer_of_nodes(["/_blocks.2/_project_conv/Conv"], 2)
    # an int8 model dequantises some blocks' weights before the stem runs: each is its block's, and the nodes
    # around them stay the stem's
    int8 = ["_blocks.1._bn1.bias4_DequantizeLinear/duplicated", "_blocks.0._bn1.weight_DequantizeLinear/duplicated",
            "input_QuantizeLinear", "Transpose", "/_conv_stem/Conv_token_1", "/_blocks.0/_depthwise_conv/Conv_token_4",
            "/_blocks.1/_project_conv/Conv_token_9", "/_conv_head/Conv_token_12", "/_fc/Gemm", "logits_DequantizeLinear"]
    assert _layer_of_nodes(int8, 2) == [2, 1, 0, 0, 0, 1, 2, 3, 3, 3]
    with pytest.raises(LatencyTableError, match="block 2, but the model has 2 blocks"):
        _layer_of_nodes(["_blocks.2._bn1.bias_DequantizeLinear"], 2)


def test_backend_and_device_errors_are_one_line(root, tmp_path):
    cuda = run(root, "latency-table", "--out", str(tmp_path / "t.json"), "--backend", "onnxruntime",
               "--device", "cuda")
    assert cuda.returncode == 2 and "use --backend torch for --device cuda" in one_error_line(cuda.stderr)
    unknown = run(root, "latency-table", "--out", str(tmp_path / "t.json"), "--backend", "tensorrt")
    assert unknown.returncode == 2 and "invalid choice: 'tensorrt'" in unknown.stderr
    assert not (tmp_path / "t.json").exists()


def test_the_report_shows_the_latency_predicted_for_the_target(tmp_path):
    """The proposal's predicted_latency_ms (the tuner's table) is a column, a Pareto front and a CSV field."""
    from efficientnet.nni_rest import Trial
    from efficientnet.report import build_report

    specs = tiny_specs()[:2]
    trials = [Trial(f"T{i}", "SUCCEEDED", {"arch": str(s), "predicted_latency_ms": 3.0 + i}, i,
                    {"default": 80.0 + i, "arch": str(s), "budget": "full", "macs": 1e6 * (i + 1)})
              for i, s in enumerate(specs)]
    text = build_report(trials, tmp_path, "t", presets=(), num_classes=10, preset_latency=False)
    assert "## Pareto front: accuracy vs latency predicted for the target (latency table)" in text
    assert "| predicted_latency_ms |" in text and "| 4.00 |" in text
    assert (tmp_path / "trials.csv").read_text().splitlines()[0].endswith("latency_ms,predicted_latency_ms,arch")
