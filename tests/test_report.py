"""``python -m efficientnet report`` on a real, finished tiny experiment (the project's trial, random search):
through its REST API, from its export file, and from NNI's own database once it has stopped."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from efficientnet.cli import main
from efficientnet.data import export_digits
from efficientnet.nni_db import read_trials
from efficientnet.nni_rest import Trial
from efficientnet.spec import ArchSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nni_harness  # noqa: E402
from test_e2e_nni import tiny_overrides  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "alpha": {"_type": "quniform", "_value": [1.0, 2.0, 0.1]},
    "beta": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "gamma": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "stage6_kernel": {"_type": "choice", "_value": [3, 5]},
}
TRIALS = 4


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real experiment with TRIALS finished trials, kept running (read-only) for the test, stopped at the end."""
    work = tmp_path_factory.mktemp("exp")
    (work / "space.json").write_text(json.dumps(SPACE))
    overrides = tiny_overrides(TRIALS, strategy="random", seed=0)
    overrides.pop("assessor", None)
    overrides["searchSpaceFile"] = str(work / "space.json")
    config = nni_harness.write_config(ROOT, work, overrides, "--epochs 1 --subset 0.5")
    raw = yaml.safe_load(config.read_text())
    raw.pop("assessor", None)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    with nni_harness.experiment(config) as exp:
        done = exp.client.wait(
            lambda c: sum(t.status == "SUCCEEDED" for t in c.trials()) >= TRIALS, timeout=240, interval=1)
        assert done, f"trials did not finish: {[t.status for t in exp.client.trials()]}"
        export = work / "export.json"
        proc = nni_harness.nnictl("experiment", "export", exp.id, "--filename", str(export), "--type", "json")
        assert proc.returncode == 0 and export.exists(), proc.stdout + proc.stderr
        yield exp, export


def test_report_from_the_rest_api_writes_table_csv_png_and_best_spec(finished, tmp_path, capsys):
    exp, _ = finished
    out = tmp_path / "rep"
    assert main(["report", "--experiment", exp.id, "--output-dir", str(out), "--presets", "b0,b1",
                 "--num-classes", "10"]) == 0
    text = capsys.readouterr().out
    trials = exp.client.trials()
    best = max(trials, key=lambda t: t.final["default"])
    assert f"## Best {TRIALS} trials (full budget)" in text and "## Pareto front: accuracy vs MACs" in text
    table = text.split("## Best")[1].split("##")[0]
    order = sorted(trials, key=lambda t: table.index(t.id))
    assert [t.final["default"] for t in order] == sorted((t.final["default"] for t in trials), reverse=True)
    assert "| b0 |" in text and "| b1 |" in text and "Ranked by `default`: validation top-1 (%)." in text
    with open(out / "trials.csv") as f:
        assert {r["trial"] for r in csv.DictReader(f)} == {t.id for t in trials}
    doc = json.loads((out / "best_spec.json").read_text())
    assert doc["trial"] == order[0].id and doc["metrics"]["default"] == best.final["default"]
    # the best trial's own result.json (its folder is on this machine): its classes, one by one
    assert f"## Per class: trial {order[0].id} (epoch 1, validation)" in text
    assert [row["class"] for row in doc["per_class"]] == [str(d) for d in range(10)]
    section = text.split("## Per class")[1].split("\n\n")[1]
    assert len(section.splitlines()) == 2 + 10 and "| 0 | " in section
    # and its largest mistakes, as its result.json has them
    mistakes = json.loads(next(t.folder for t in trials if t.id == order[0].id).joinpath("result.json")
                          .read_text())["most_confused"]
    assert doc["most_confused"] == mistakes and mistakes
    section = text.split(f"## Most confused: trial {order[0].id}")[1].split("\n\n")[2]
    assert section.splitlines()[2:] == [f"| {m['true']} | {m['predicted']} | {m['count']} |" for m in mistakes]
    # where its model is, and the commands that score and export it; scored on the images it validated on, it
    # gives the score the trial reported
    folder = next(t.folder for t in trials if t.id == order[0].id)
    checkpoint = Path(doc["checkpoint"])
    assert checkpoint == folder / "model_best.pth.tar" and checkpoint.is_file()
    assert f"python -m efficientnet evaluate {checkpoint} TEST_DATA\npython -m efficientnet export {checkpoint} " \
        "--int8   # ONNX, fp32 and int8\n" in text
    assert main(["evaluate", str(checkpoint), str(export_digits() / "val"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["metrics"]["top1"] == pytest.approx(json.loads((folder / "result.json").read_text())["top1"])
    # the trial's own result names what it trained (with concurrent trials, NNI's trial-jobs parameters may not)
    assert ArchSpec.from_dict(doc["spec"]) == ArchSpec.parse(order[0].final["arch"])
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    from PIL import Image

    with Image.open(out / "pareto.png") as img:
        assert img.size == (1200, 500)
        colours = img.convert("RGB").getcolors(1 << 20)
        assert colours is not None and len(colours) > 50  # drawn, not blank


def test_report_from_the_export_file_agrees(finished, tmp_path, capsys):
    exp, export = finished
    assert main(["report", "--from-export", str(export), "--output-dir", str(tmp_path), "--presets", ""]) == 0
    text = capsys.readouterr().out
    points = [(t.final["default"], t.final["macs"]) for t in exp.client.trials()]
    on_front = [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]
    front = text.split("## Pareto front: accuracy vs MACs (full budget)")[1].split("##")[0]
    assert front.count("\n| ") - 1 == len(set(on_front))  # rows minus the header row


def test_report_of_a_stopped_experiment_reads_nni_database_read_only(finished, tmp_path, capsys):
    exp, _ = finished
    live = {t.id: (t.status, t.parameters, t.final, t.intermediate) for t in exp.client.trials()}
    nni_harness.stop(exp)  # no REST server any more
    db = exp.workdir / exp.id / "db" / "nni.sqlite"
    before = db.read_bytes()
    assert main(["report", "--experiment", exp.id, "--output-dir", str(tmp_path), "--presets", ""]) == 0
    text = capsys.readouterr().out
    assert db.read_bytes() == before
    assert {t.id: (t.status, t.parameters, t.final, t.intermediate) for t in read_trials(db)} == live
    chosen = json.loads((tmp_path / "best_spec.json").read_text())["trial"]
    assert live[chosen][2]["default"] == max(v[2]["default"] for v in live.values())
    assert f"## Best {TRIALS} trials (full budget)" in text
    assert f"## Per class: trial {chosen} " in text  # from the trial's result.json in its folder
    copied = tmp_path / "elsewhere"  # an experiment folder copied from another machine
    shutil.copytree(exp.workdir / exp.id, copied / exp.id)
    away = exp.workdir / f"{exp.id}.away"  # the original folder is not on this machine
    (exp.workdir / exp.id).rename(away)
    try:
        assert main(["report", "--experiment", exp.id, "--experiments-dir", str(copied), "--output-dir",
                     str(tmp_path / "copy"), "--presets", ""]) == 0
    finally:
        away.rename(exp.workdir / exp.id)
    # the same report, its files in the other output folder and its best model in the copied experiment folder
    assert capsys.readouterr().out == text.replace(str(tmp_path), str(tmp_path / "copy")).replace(
        str(exp.workdir / exp.id), str(copied / exp.id))


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert main(["report", "--experiment", "no-such-exp", "--experiments-dir", str(tmp_path), "--output-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: no NNI database at {tmp_path / 'no-such-exp' / 'db' / 'nni.sqlite'}; check the "
                   "experiment ID, or pass --experiments-dir (the experimentWorkingDirectory of its config)\n")
    (tmp_path / "broken" / "db").mkdir(parents=True)
    (tmp_path / "broken" / "db" / "nni.sqlite").write_text("not a database")
    assert main(["report", "--experiment", "broken", "--experiments-dir", str(tmp_path), "--output-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read the NNI database") and err.count("\n") == 1
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"trialJobId": "a", "parameter": {"alpha": 1.0}, "value": "\"oops\""}]))
    assert main(["report", "--from-export", str(empty), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no finished trial" in err and err.count("\n") == 1
    port = nni_harness.free_port()
    assert main(["report", "--port", str(port), "--output-dir", str(tmp_path)]) == 2
    assert f"no NNI experiment answers on port {port}" in capsys.readouterr().err



def _trial(i: int, curve: list[float], status: str = "SUCCEEDED", **final) -> Trial:
    result = {"default": max(curve), "epochs": len(curve), "epochs_trained": len(curve), "budget": "full", **final}
    return Trial(f"T{i}", status, {}, i, result, [{"default": v, "loss": 1.0} for v in curve])


@pytest.mark.filterwarnings("error:No artists with labels")  # these trials have no costs: an empty plot, no legend
def test_early_ranking_compares_first_and_last_epochs_of_complete_full_budget_trials(tmp_path):
    from efficientnet.report import build_report, early_ranking

    agree = [_trial(i, [50.0 + i, 60.0 + i, 70.0 + 2 * i]) for i in range(5)]
    reverse = [_trial(i, [50.0 + i, 60.0, 70.0 - i]) for i in range(5)]
    assert early_ranking(agree) == (pytest.approx(1.0), 5)
    assert early_ranking(reverse) == (pytest.approx(-1.0), 5)
    skipped = [  # each would break the perfect agreement, and none is a complete full-budget run from epoch 1
        _trial(10, [99.0, 1.0, 0.0], budget="rung0"),
        _trial(11, [99.0, 1.0, 0.0], status="USER_CANCELED"),
        _trial(12, [99.0, 0.0], epochs=3, epochs_trained=2, continued_from="T1"),
        _trial(13, [99.0, 1.0], epochs=3),  # a stopped or resumed trial: fewer reports than epochs
    ]
    assert early_ranking(agree + skipped) == (pytest.approx(1.0), 5)
    assert early_ranking(agree[:2]) is None and early_ranking([_trial(0, [50.0])] * 4) is None
    text = build_report(reverse, tmp_path, "t", presets=(), num_classes=10, preset_latency=False)
    assert "rank correlation of the first epoch's accuracy with the last epoch's: **-1.00** over 5" in text


@pytest.mark.filterwarnings("error:No artists with labels")
def test_the_report_names_the_metric_the_trials_were_ranked_by(tmp_path):
    from efficientnet.report import build_report

    trials = [_trial(i, [60.0 + i], eval_metric="f1", top1=90.0 - i, f1=(60.0 + i) / 100) for i in range(3)]
    text = build_report(trials, tmp_path, "t", presets=(), num_classes=10, preset_latency=False)
    assert "Ranked by `default`: validation macro F1 (%)." in text
    assert "| T2 | SUCCEEDED | full | 62.000 | 88.000 |  | 0.6200 |" in text  # top-1 and F1 beside the default
    assert (tmp_path / "trials.csv").read_text().startswith("trial,status,budget,default,top1,top5,f1,")
    older = [_trial(i, [60.0 + i]) for i in range(3)]  # results from before --eval-metric: top-1
    assert "Ranked by `default`: validation top-1 (%)." in build_report(
        older, tmp_path, "t", presets=(), num_classes=10, preset_latency=False)
