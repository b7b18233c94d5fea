"""``python -m efficientnet report``: the best trials, the Pareto fronts and a plot of an NNI experiment.

Reads the trials through NNI's REST API while the experiment runs (``--experiment ID``, whose port ``nnictl``
remembers, or ``--port``), from NNI's own database once it has stopped (``--experiment ID``, read-only; see
:mod:`efficientnet.nni_db`), or from ``nnictl experiment export ID --filename F --type json`` (``--from-export F``). Writes to ``--output-dir``:
``report.md`` (the tables), ``trials.csv`` (every finished trial), ``pareto.png`` (accuracy against MACs and against
latency, the B0–B3 presets profiled as reference points) and ``best_spec.json`` (the best architecture's spec and
metrics). Results of lower budgets (``budget: proxy``, or successive halving's ``rungN``) are listed apart and never
ranked against full ones.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .arguments import CLIError
from .atomic_files import atomic_write_json, atomic_write_text
from .nni_db import NNIDatabaseError, experiment_db, nnictl_record, read_trials
from .nni_rest import NNIClient, NNIUnavailable, Trial, decode_metric
from .proposal import Proposal
from .spec import ArchSpec, SpecError, preset

__all__ = ["Row", "build_report", "early_ranking", "load_trials", "rows_of"]

COLUMNS = ("trial", "status", "budget", "default", "top1", "top5", "f1", "params", "macs", "latency_ms", "predicted_latency_ms",
           "arch")  # Row's fields of the same names, in the report's tables and trials.csv


@dataclass
class Row:
    """One finished trial with a numeric ``default``."""

    trial: str
    status: str
    budget: str
    default: float
    top5: float | None
    params: float | None
    macs: float | None
    latency_ms: float | None
    arch: str | None
    final: dict[str, Any]
    predicted_latency_ms: float | None = None  # from the tuner's latency table (the target device)
    top1: float | None = None  # validation top-1 (%) and macro F1 (0-1) of the best epoch
    f1: float | None = None

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        return [self.trial, self.status, self.budget, num(self.default, ".3f"), num(self.top1, ".3f"),
                num(self.top5, ".3f"), num(self.f1, ".4f"),
                num(None if self.params is None else self.params / 1e6, ".3f") + ("M" if self.params else ""),
                num(None if self.macs is None else self.macs / 1e6, ".1f") + ("M" if self.macs else ""),
                num(self.latency_ms, ".2f"), num(self.predicted_latency_ms, ".2f"), self.arch or ""]


# ------------------------------------------------------------------------------------------------ loading
def _recorded_port(experiment: str) -> int | None:
    """The REST port nnictl recorded for ``experiment`` (``None`` when it has no record of it)."""
    port = nnictl_record(experiment).get("port")  # no record: the database may still be there
    return int(port) if port else None


def _from_export(export: str) -> list[Trial]:
    try:
        records = json.loads(Path(export).read_text())
    except FileNotFoundError:
        raise CLIError(f"export file {export!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"export file {export!r} is not JSON: {exc}") from None
    if not isinstance(records, list):
        raise CLIError(f"export file {export!r} is not an 'nnictl experiment export --type json' list")
    trials = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            continue
        params = decode_metric(r.get("parameter")) or {}
        trials.append(Trial(str(r.get("trialJobId", i)), "SUCCEEDED", params if isinstance(params, dict) else {},
                            r.get("id"), decode_metric(r.get("value"))))
    return trials


def load_trials(experiment: str | None = None, port: int | None = None, export: str | None = None,
                experiments_dir: str | None = None) -> list[Trial]:
    """Every trial of the experiment: from its REST API while it runs (or is viewed), from NNI's own database
    (read-only) once it has stopped, or from an export file."""
    if export:
        return _from_export(export)
    if port is None and not experiment:
        raise CLIError("give --experiment ID, --port PORT or --from-export FILE")
    if port is None and experiments_dir is None:
        port = _recorded_port(experiment)
    if port is not None:
        try:
            client = NNIClient(port, timeout=15)
            found = client.profile().get("id")
            if experiment and found and found != experiment:
                raise CLIError(f"port {port} serves experiment {found}, not {experiment}")
            return client.trials()
        except NNIUnavailable:
            if not experiment:
                raise CLIError(f"no NNI experiment answers on port {port}: give --experiment ID to read a stopped "
                               "one from its database, or --from-export FILE") from None
    try:  # stopped: NNI's own database
        db = experiment_db(experiment, experiments_dir)
        trials = read_trials(db)
    except NNIDatabaseError as exc:
        raise CLIError(str(exc)) from None
    marker = f"/{experiment}/"
    for t in trials:  # trial folders where the experiment's folder is now (one copied from elsewhere, say)
        old = str(t.folder or "")
        if marker in old:
            t.log_path = str(db.parent.parent / old.split(marker, 1)[1])
    return trials


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def rows_of(trials: Sequence[Trial]) -> list[Row]:
    """The trials with a numeric final ``default``, costs from the result dict or else from the proposal."""
    rows = []
    for t in trials:
        final = t.final if isinstance(t.final, dict) else {"default": t.final}
        default = _number(final.get("default"))
        if default is None:
            continue
        try:
            proposal = Proposal.from_parameters(t.parameters)
        except SpecError:  # an arch that does not parse: the trial's own final result still says what it trained
            proposal = Proposal()

        def cost(key: str) -> float | None:
            own = _number(final.get(key))
            return own if own is not None else _number(proposal.costs.get(key))

        budget = final.get("budget", proposal.budget_name)  # the trial's own word first, then its proposal
        rows.append(Row(t.id, t.status, str(budget or "full"), default,
                        _number(final.get("top5")), cost("params"), cost("macs"), cost("latency_ms"),
                        final.get("arch") or (str(proposal.spec) if proposal.spec else None), final,
                        cost("predicted_latency_ms"), _number(final.get("top1")), _number(final.get("f1"))))
    return rows


def early_ranking(trials: Sequence[Trial]) -> tuple[float, int] | None:
    """How well the first epoch ranks architectures: Spearman's rank correlation of the first epoch's validation
    accuracy with the last one's, over the full-budget trials that trained all their epochs from the start (none
    continued or resumed, none stopped: every epoch reported). None with fewer than 3 such trials."""
    from scipy.stats import spearmanr

    pairs = []
    for t in trials:
        final = t.final if isinstance(t.final, dict) else {}
        epochs = final.get("epochs")
        if (t.status != "SUCCEEDED" or final.get("budget", "full") not in (None, "full") or not isinstance(epochs, int)
                or epochs < 2 or final.get("epochs_trained") != epochs or len(t.intermediate) != epochs):
            continue
        first, last = (_number(m.get("default") if isinstance(m, dict) else m) for m in (t.intermediate[0],
                                                                                        t.intermediate[-1]))
        if first is not None and last is not None:
            pairs.append((first, last))
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr(*zip(*pairs))[0]), len(pairs)


# ------------------------------------------------------------------------------------------------ report
def _table(rows: Sequence[Row]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(r.cells()) + " |" for r in rows]


def _front(rows: Sequence[Row], cost: str) -> list[Row]:
    # imported here: the search package loads NNI's tuners, which every ``python -m efficientnet`` command (this
    # module builds the ``report`` one) paid for at start-up
    from .search.pareto import pareto_front

    usable = [r for r in rows if getattr(r, cost) is not None]
    idx = pareto_front([(r.default, getattr(r, cost)) for r in usable], (True, False))
    return sorted((usable[i] for i in idx), key=lambda r: getattr(r, cost))


def _presets(names: Sequence[str], rows: Sequence[Row], num_classes: int, latency: bool) -> list[dict[str, Any]]:
    """B0–B3 (or ``names``) profiled; with the accuracy of a trial that trained exactly that preset, if any."""
    from .profiler import measure_latency
    from .search.costs import estimate_costs

    out = []
    for name in names:
        spec = preset(name)
        est = estimate_costs(spec, num_classes)
        ref: dict[str, Any] = {"name": name, "macs": est.macs, "params": est.params, "latency_ms": None,
                               "accuracy": None}
        if latency:
            ref["latency_ms"] = measure_latency(spec, num_classes=num_classes, repeats=3, warmup=1)
        for r in rows:
            try:
                trained = ArchSpec.parse(r.arch) if r.arch else None
            except SpecError:
                trained = None
            if trained is not None and trained.replace(resolution=spec.resolution, dropout=spec.dropout) == spec:
                if ref["accuracy"] is None or r.default > ref["accuracy"]:
                    ref.update(accuracy=r.default, trial=r.trial, trained_macs=r.macs, trained_latency_ms=r.latency_ms)
        out.append(ref)
    return out


def metric_label(rows: Sequence[Row]) -> str:
    """What the trials' ``default`` measures: their ``eval_metric`` (``top-1`` for trials from before it existed)."""
    from .trial_config import EVAL_METRICS

    names = sorted({str(r.final.get("eval_metric", "top1")) for r in rows})
    return EVAL_METRICS.get(names[0], names[0]) if len(names) == 1 else "score (" + ", ".join(names) + ")"


def _plot(path: Path, rows: Sequence[Row], proxy: Sequence[Row], refs: Sequence[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    for ax, cost, label in ((axes[0], "macs", "MACs (millions)"), (axes[1], "latency_ms", "CPU latency (ms)")):
        scale = 1e6 if cost == "macs" else 1.0
        pts = [(getattr(r, cost) / scale, r.default) for r in rows if getattr(r, cost) is not None]
        if pts:
            ax.scatter(*zip(*pts), s=28, color="tab:blue", label="trials (full budget)", zorder=3)
        ppts = [(getattr(r, cost) / scale, r.default) for r in proxy if getattr(r, cost) is not None]
        if ppts:
            ax.scatter(*zip(*ppts), s=28, facecolors="none", edgecolors="tab:gray", label="trials (lower budgets)")
        front = [(getattr(r, cost) / scale, r.default) for r in _front(rows, cost)]
        if front:
            ax.step(*zip(*front), where="post", color="tab:red", lw=1.5, label="Pareto front", zorder=2)
            ax.scatter(*zip(*front), s=60, facecolors="none", edgecolors="tab:red", zorder=4)
        for ref in refs:
            x = ref.get("trained_macs" if cost == "macs" else "trained_latency_ms") if ref["accuracy"] is not None else None
            x = x if x is not None else ref[cost]
            if x is None:
                continue
            x /= scale
            if ref["accuracy"] is not None:
                ax.scatter([x], [ref["accuracy"]], marker="*", s=160, color="tab:orange", zorder=5)
                ax.annotate(ref["name"].upper() + " (trained)", (x, ref["accuracy"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
            else:
                ax.axvline(x, color="tab:green", ls=":", lw=1)
                ax.annotate(ref["name"].upper(), (x, 1.0), xycoords=("data", "axes fraction"), textcoords="offset points",
                            xytext=(2, -12), fontsize=8, color="tab:green")
        ax.set_xscale("log")
        ax.set_xlabel(label + " — log scale")
        ax.set_ylabel(f"validation {metric_label([*rows, *proxy])} (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"accuracy vs {'MACs' if cost == 'macs' else 'latency'}")
    if axes[0].get_legend_handles_labels()[0]:  # trials without costs leave nothing to label
        axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title + " (dotted: B0–B3 presets, profiled at their own resolution)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def trial_result(trial: Trial) -> dict[str, Any] | None:
    """The ``result.json`` a trial wrote in its folder, when that folder is on this machine (a local experiment;
    NNI records it as ``file://localhost:/path``), else None."""
    if trial.folder is None:
        return None
    try:
        result = json.loads((trial.folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _model_of(trial: Trial, result: dict[str, Any] | None) -> tuple[Path, str] | None:
    """The trial's ``model_best.pth.tar`` when it is on this machine, and the test data to evaluate it on: the
    trial's dataset when that holds test images (a ``test/`` folder, a CSV's test rows), else ``TEST_DATA``."""
    from .checkpoint import BEST_NAME
    from .label_table import has_test_images

    if trial.folder is None or not (trial.folder / BEST_NAME).is_file():
        return None
    config = result.get("config") if result else None
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, str) and has_test_images(data, config.get("label_column")):
        return trial.folder / BEST_NAME, shlex.quote(data)
    return trial.folder / BEST_NAME, "TEST_DATA"


def build_report(trials: Sequence[Trial], out_dir: Path, title: str, top: int = 10,
                 presets: Sequence[str] = ("b0", "b1", "b2", "b3"), num_classes: int = 1000,
                 preset_latency: bool = True) -> str:
    """Write report.md, trials.csv, pareto.png and best_spec.json to ``out_dir``; return the text report."""
    rows_all = rows_of(trials)
    if not rows_all:
        raise CLIError(f"{title} has no finished trial with a numeric result yet ({len(trials)} trials)")
    full = [r for r in rows_all if r.budget == "full"]
    proxy = [r for r in rows_all if r.budget != "full"]  # proxy training, successive halving's lower rungs
    ranked = sorted(full, key=lambda r: -r.default)
    lines = [f"# Report: {title}", "", f"{len(trials)} trials, {len(full)} finished at the full budget"
             + (f", {len(proxy)} at lower budgets (ranked apart)" if proxy else "")
             + f". Ranked by `default`: validation {metric_label(rows_all)} (%).", ""]
    if ranked:
        lines += [f"## Best {min(top, len(ranked))} trials (full budget)", "", *_table(ranked[:top]), ""]
    if proxy:
        lines += [f"## Best {min(top, len(proxy))} trials (lower budgets)", "",
                  *_table(sorted(proxy, key=lambda r: -r.default)[:top]), ""]
    fronts = [("macs", "MACs"), ("latency_ms", "latency")]
    if any(r.predicted_latency_ms is not None for r in full):
        fronts.append(("predicted_latency_ms", "latency predicted for the target (latency table)"))
    for cost, name in fronts:
        front = _front(full, cost)
        lines += [f"## Pareto front: accuracy vs {name} (full budget)", ""]
        lines += [*_table(front), ""] if front else [f"(no trial reported {cost})", ""]
    refs = _presets(presets, full, num_classes, preset_latency and any(r.latency_ms is not None for r in full))
    if refs:
        lines += ["## Reference presets (profiled; accuracy when a trial trained exactly that preset)", "",
                  "| preset | params | MACs | latency_ms | accuracy |", "|---|---|---|---|---|"]
        for ref in refs:
            lat = "" if ref["latency_ms"] is None else f"{ref['latency_ms']:.2f}"
            acc = "" if ref["accuracy"] is None else f"{ref['accuracy']:.3f} ({ref['trial']})"
            lines.append(f"| {ref['name']} | {ref['params'] / 1e6:.2f}M | {ref['macs'] / 1e6:.1f}M | {lat} | {acc} |")
        lines.append("")
    ranking = early_ranking(trials)
    if ranking is not None:
        lines += ["## Does the first epoch rank the architectures?", "",
                  f"Spearman rank correlation of the first epoch's accuracy with the last epoch's: **{ranking[0]:.2f}** "
                  f"over {ranking[1]} full-budget trials that trained every epoch. Near 1, early epochs already tell "
                  "the best architectures apart, and successive halving (classArgs `min_epochs`, `full_epochs`: "
                  "docs/tuner.md) saves time; near 0 it drops good candidates early.", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    best = ranked[0] if ranked else max(proxy, key=lambda r: r.default)
    best_doc: dict[str, Any] = {"trial": best.trial, "budget": best.budget, "metrics": best.final, "arch": best.arch}
    best_trial = next(t for t in trials if t.id == best.trial)
    own = trial_result(best_trial)
    if own and isinstance(own.get("per_class"), list) and own["per_class"]:
        best_doc["per_class"] = own["per_class"]
        lines += [f"## Per class: trial {best.trial} (epoch {own.get('best_epoch')}, validation)", "",
                  "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c.get('class')} | {c.get('precision', 0):.3f} | {c.get('recall', 0):.3f} | "
                  f"{c.get('f1', 0):.3f} | {c.get('support')} |" for c in own["per_class"]]
        lines.append("")
    if own and isinstance(own.get("most_confused"), list) and own["most_confused"]:
        best_doc["most_confused"] = own["most_confused"]
        lines += [f"## Most confused: trial {best.trial}", "", "Its largest mistakes on the validation images.", "",
                  "| true class | predicted as | images |", "|---|---|---|"]
        lines += [f"| {m.get('true')} | {m.get('predicted')} | {m.get('count')} |" for m in own["most_confused"]]
        lines.append("")
    model = _model_of(best_trial, own)
    if model is not None:
        checkpoint, data = model
        best_doc["checkpoint"] = str(checkpoint)
        lines += [f"## The model of trial {best.trial}", "", "Score it on images no trial has seen, then export it:", "",
                  "```bash", f"python -m efficientnet evaluate {shlex.quote(str(checkpoint))} {data}",
                  f"python -m efficientnet export {shlex.quote(str(checkpoint))} --int8   # ONNX, fp32 and int8",
                  f"python -m efficientnet evaluate {shlex.quote(str(checkpoint))} --split val --heatmaps "
                  "mistakes.png   # its mistakes on its validation images, and where it looked", "```", ""]
    try:
        best_doc["spec"] = ArchSpec.parse(best.arch).to_dict() if best.arch else None
    except SpecError:
        best_doc["spec"] = None
    atomic_write_json(best_doc, out_dir / "best_spec.json")
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(COLUMNS)
    for r in sorted(rows_all, key=lambda r: (r.budget, -r.default)):
        writer.writerow([getattr(r, column) for column in COLUMNS])
    atomic_write_text(table.getvalue(), out_dir / "trials.csv")
    _plot(out_dir / "pareto.png", full, proxy, refs, title)
    lines += [f"Best: trial {best.trial} ({best.budget} budget), default {best.default:.3f}; spec in "
              f"{out_dir / 'best_spec.json'}; plot {out_dir / 'pareto.png'}", ""]
    text = "\n".join(lines)
    atomic_write_text(text, out_dir / "report.md")
    return text


# ------------------------------------------------------------------------------------------------ command
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", help="experiment ID: read through its REST API while it runs, from NNI's own "
                   "database (read-only) once it has stopped")
    p.add_argument("--experiments-dir", help="the folder holding the experiment's folder (default: where nnictl "
                   "recorded it, else ~/nni-experiments); for an experiment folder copied from elsewhere")
    p.add_argument("--port", type=int, help="REST port of a running or viewed experiment")
    p.add_argument("--from-export", metavar="FILE", help="file of 'nnictl experiment export ID --type json'")
    p.add_argument("--output-dir", default="report", help="where to write the files (default %(default)s)")
    p.add_argument("--top", type=int, default=10, help="rows in the best-trials table")
    p.add_argument("--presets", default="b0,b1,b2,b3", help="reference presets, comma-separated ('' for none)")
    p.add_argument("--num-classes", type=int, default=1000, help="class count for the presets' profiles")
    p.add_argument("--no-preset-latency", action="store_true", help="do not measure the presets' CPU latency")


def cmd_report(args: argparse.Namespace) -> int:
    """Print the report and write its files."""
    if args.top < 1:
        raise CLIError(f"--top must be at least 1, got {args.top}")
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    for n in names:
        preset(n)  # SpecError (one line, exit 2) for an unknown preset
    trials = load_trials(args.experiment, args.port, args.from_export, args.experiments_dir)
    title = f"experiment {args.experiment}" if args.experiment else (
        f"export {Path(args.from_export).name}" if args.from_export else f"experiment on port {args.port}")
    print(build_report(trials, Path(args.output_dir), title, args.top, names, args.num_classes,
                       not args.no_preset_latency))
    return 0
