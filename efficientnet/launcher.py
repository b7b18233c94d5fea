"""``python -m efficientnet create|resume|view``: ``nnictl`` with the experiment checked first and NNI's manager fixed.

``create`` checks the experiment before anything starts: NNI's own config validation, then the tuner's own checks
(classArgs, strategy, search space and budgets: the tuner is built and given the search space, as NNI's dispatcher
would), GPU sharing (``useActiveGpu``) and the trial command's flags (and, on the local machine, its data folder). A
problem is one ``error:`` line and exit status 2, with nothing started.

It then runs ``nnictl`` with NNI's manager preloaded with ``nni_guard.js`` (``NODE_OPTIONS=--require ...``), which

- binds the experiment's port (WebUI, REST API, trial and tuner channels) to loopback, plus the addresses given with
  ``--bind`` or the config's ``nniManagerIp`` (remote and Kubernetes training machines must reach the manager);
- hands each trial the parameters NNI recorded for it (NNI 3.0 hands them out first come, first served);
- serves ``/trial-file/<trial>/<name>`` only from inside the trial's folder;
- shows a tuner error as the experiment's error;
- lets a trial have every GPU of the machine, and makes a trial wait for a GPU without stalling the manager (NNI 3.0
  refused the first and spun on the second).

nnictl itself is given up to a minute, instead of 3 s, for NNI's manager to answer (:func:`patient_manager_start`).
Finally it waits (a bounded time) until the first trial is submitted, and reports the experiment's error if it
stopped instead. ``--bind 0.0.0.0`` listens on every interface as plain NNI does; plain ``nnictl`` runs without any
of this.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .arguments import CLIError

__all__ = ["GUARD_JS", "LOOPBACK", "guard_environment", "check_experiment_config", "bind_addresses", "launch"]

GUARD_JS = Path(__file__).with_name("nni_guard.js")
LOOPBACK = ("127.0.0.1", "::1")
DEFAULT_PORT = 8080
START_TIMEOUT = 90.0  # seconds to wait for the first trial after nnictl returns
GUARD_STATUS = "efficientnet_guard.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def guard_environment(bind: Sequence[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with NNI's manager preloaded with the guard, bound to ``bind``."""
    env = dict(os.environ if env is None else env)
    require = f'--require "{GUARD_JS}"'
    options = env.get("NODE_OPTIONS", "")
    if str(GUARD_JS) not in options:
        env["NODE_OPTIONS"] = f"{options} {require}".strip()
    env["EFFICIENTNET_NNI_BIND"] = ",".join(dict.fromkeys(bind))
    return env


def bind_addresses(extra: Sequence[str], manager_ip: str | None) -> list[str]:
    """Loopback, then the config's ``nniManagerIp`` and the ``--bind`` addresses; ``0.0.0.0``/``::`` alone means
    every interface (NNI's own behaviour)."""
    wanted = [a for a in extra if a]
    if any(a in ("0.0.0.0", "::", "*") for a in wanted):
        return ["0.0.0.0"]
    if manager_ip and manager_ip not in ("localhost", *LOOPBACK):
        wanted.insert(0, manager_ip)
    return list(dict.fromkeys([*LOOPBACK, *wanted]))


# ----------------------------------------------------------------------------------------------------- checks
def load_config(path: Path):
    """NNI's own reading of an experiment config (v1 files converted as nnictl does), canonical and validated."""
    import yaml
    from nni.experiment.config import ExperimentConfig

    if not path.is_file():
        raise CLIError(f"{path} is not a file: give the experiment's config.yml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CLIError(f"cannot read {path}: {_first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise CLIError(f"{path} is not an experiment config (a YAML mapping)")
    try:
        if raw.get("trainingServicePlatform"):  # NNI 1.x format, converted the way nnictl converts it
            from nni.experiment.config import convert, utils

            utils.set_base_path(path.parent)
            try:
                config = ExperimentConfig(**convert.to_v2(raw))
            finally:
                utils.unset_base_path()
        else:
            config = ExperimentConfig.load(str(path))
        return config.canonical_copy()
    except Exception as exc:  # NNI raises ValueError, AssertionError, TypeError... with its own message
        raise CLIError(f"{path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _algorithm_class(section, role: str, path: Path) -> type | None:
    """The class a custom tuner or assessor section names, imported from its codeDirectory as NNI's dispatcher
    does; None for NNI's built-in ones (NNI checks their names and classArgs)."""
    if section is None or not getattr(section, "class_name", None):
        return None
    import importlib

    code_dir = Path(section.code_directory)
    module_name, _, class_name = section.class_name.rpartition(".")
    sys.path.insert(0, str(code_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CLIError(f"{path}: {role} module {module_name!r} cannot be imported from {code_dir}: "
                       f"{_first_line(exc)}") from None
    finally:
        sys.path.remove(str(code_dir))
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CLIError(f"{path}: {role} className {section.class_name!r}: {module_name} has no {class_name}")
    return cls


def check_tuner(config, path: Path) -> str | None:
    """Build the config's tuner with its classArgs and give it the search space, as NNI's dispatcher would, for a
    tuner of this project (one with ``check_experiment``); build an assessor of this project with its classArgs.
    Returns the tuner's one-line summary."""
    from .search.costs import estimated_profile

    summary = None
    tuner = _algorithm_class(config.tuner, "tuner", path)
    check = getattr(tuner, "check_experiment", None)
    if check is not None:
        try:  # budgets on the closed forms, which equal the profiler's; NNI's dispatcher cross-checks them with it
            summary = check(dict(config.tuner.class_args or {}), config.search_space, profiler=estimated_profile)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{path}: tuner: {_first_line(exc)}") from None
    assessor = _algorithm_class(config.assessor, "assessor", path)
    if assessor is not None and assessor.__module__.startswith(f"{__package__}."):
        try:
            assessor(**dict(config.assessor.class_args or {}))
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{path}: assessor: {_first_line(exc)}") from None
    return summary


def gpu_sharing(service) -> list[tuple[Any, int]]:
    """Each machine of a training service's config (the service itself, or a remote service's machines) with how
    many trials may share one of its GPUs (its ``maxTrialNumberPerGpu``); empty when trials use no GPU."""
    if not getattr(service, "trial_gpu_number", None):
        return []
    machines = getattr(service, "machine_list", None) or [service]
    return [(m, int(getattr(m, "max_trial_number_per_gpu", 1) or 1)) for m in machines]


def trials_per_gpu(service) -> int:
    """How many trials may share one GPU under a training service's config: its ``maxTrialNumberPerGpu`` (the
    largest of a remote service's machines), 1 when trials use no GPU."""
    return max((sharing for _, sharing in gpu_sharing(service)), default=1)


def check_gpu_sharing(config, path: Path) -> None:
    """Trials that share a GPU need ``useActiveGpu: true``: NNI 3.0 counts a GPU that runs a process, its own trial
    included, as another user's, and never places a second trial on it."""
    for machine, sharing in gpu_sharing(config.training_service):
        if sharing > 1 and not getattr(machine, "use_active_gpu", False):
            where = f"machine {machine.host}" if getattr(machine, "host", None) else "trainingService"
            raise CLIError(f"{path}: {where}: maxTrialNumberPerGpu is {sharing} but useActiveGpu is false, so NNI "
                           "counts a GPU that runs a trial as taken and never starts a second trial there; set "
                           "useActiveGpu: true")


def tuner_num_classes(config, path: Path) -> int | None:
    """The class count this project's tuner profiles its proposals with (classArg ``num_classes``, default 1000);
    None for another tuner."""
    tuner = _algorithm_class(config.tuner, "tuner", path)
    if getattr(tuner, "check_experiment", None) is None:
        return None
    return (config.tuner.class_args or {}).get("num_classes", 1000)


def check_trial_command(config, path: Path, num_classes: int | None = None) -> None:
    """Parse the trial command's flags with the trial's own parser (``main_efficientnet.py`` commands only); on
    the local machine, also check its data folder's layout (class folders, not images) or its label CSV (that the
    images it names exist), and that it has the tuner's ``num_classes`` classes when given."""
    from .label_table import is_label_table, read_label_table
    from .layout import DataError, find_layout
    from .trial_config import ConfigError, parse_config

    service = config.training_service
    commands = [getattr(service, "trial_command", None) or config.trial_command]
    for command_line in filter(None, commands):
        try:
            words = shlex.split(command_line)
        except ValueError as exc:
            raise CLIError(f"{path}: trialCommand cannot be parsed ({exc})") from None
        script = next((i for i, w in enumerate(words) if w.endswith("main_efficientnet.py")), None)
        if script is None:
            continue
        try:
            cfg = parse_config(words[script + 1:])
        except ConfigError as exc:
            raise CLIError(f"{path}: trialCommand: {exc}") from None
        except SystemExit:  # argparse printed its own usage line
            raise CLIError(f"{path}: trialCommand: main_efficientnet.py does not take these flags (see above)") \
                from None
        sharing = trials_per_gpu(service)
        if cfg.trials_per_gpu < sharing:
            raise CLIError(f"{path}: trialCommand: maxTrialNumberPerGpu is {sharing} but the trial command says "
                           f"--trials-per-gpu {cfg.trials_per_gpu}; add --trials-per-gpu {sharing}, so that each "
                           "trial checks its memory against its share of the GPU")
        platform = getattr(service, "platform", None)
        if platform == "local" and cfg.data != "digits":
            data = Path(cfg.data).expanduser()
            if not data.is_absolute():
                data = Path(config.trial_code_directory or service.trial_code_directory) / data
            if not data.exists():
                raise CLIError(f"{path}: trialCommand: --data {cfg.data} does not exist on this machine "
                               f"(looked at {data}); give the dataset folder")
            table = is_label_table(data)
            try:
                classes = (read_label_table(data, cfg.num_classes, cfg.label_column, cfg.group_column) if table
                           else find_layout(data, cfg.num_classes)).classes
            except DataError as exc:
                raise CLIError(f"{path}: trialCommand: {exc}") from None
            if num_classes is not None and num_classes != len(classes):
                raise CLIError(f"{path}: tuner: classArg num_classes is {num_classes} but --data {cfg.data} has "
                               f"{len(classes)} {'labels' if table else 'class folders'}; set num_classes: "
                               f"{len(classes)} (the budgets check params and MACs with that many classes)")


def local_trial_script(config) -> Path | None:
    """The ``main_efficientnet.py`` a local experiment's trials run (None: another platform or script): the
    trials' warm starts are keyed by it."""
    service = config.training_service
    if getattr(service, "platform", None) != "local":
        return None
    try:
        words = shlex.split(config.trial_command or "")
    except ValueError:
        return None
    script = next((w for w in words if w.endswith("main_efficientnet.py")), None)
    if script is None:
        return None
    path = Path(script).expanduser()
    if not path.is_absolute():
        path = Path(config.trial_code_directory or service.trial_code_directory or ".") / path
    return path.resolve() if path.is_file() else None


def check_experiment_config(path: Path, config=None):
    """Every check of ``create`` (on ``config`` when it is already loaded); returns the canonical config."""
    config = load_config(path) if config is None else config
    summary = check_tuner(config, path)
    check_gpu_sharing(config, path)
    check_trial_command(config, path, tuner_num_classes(config, path))
    if summary:
        print(f"checked: {summary}")
    return config


# ----------------------------------------------------------------------------------------------------- running
MANAGER_START_S = 60.0  # how long create/resume/view wait for NNI's manager to answer (nnictl alone: 3 s)


@contextlib.contextmanager
def patient_manager_start(timeout: float = MANAGER_START_S) -> Iterator[None]:
    """While nnictl runs in this process, it waits up to ``timeout`` seconds for NNI's manager to answer.

    nnictl starts NNI's manager (``nni.experiment.launcher._start_rest_server``), then asks its ``check-status``
    three times a second apart; a fourth failure ends the command (``_check_rest_server``). Until the manager has
    set up its REST handler it answers ``INITIALIZING``, which is not JSON, so a manager slower than 3 s to start
    (a loaded machine; seen with parallel tests on 2 cores) failed ``create`` with "Create experiment failed:
    Expecting value: line 1 column 1 (char 0)" and killed it. Here NNI's own check is repeated until it passes,
    ``timeout`` has passed, or the manager's process has ended.
    """
    from nni.experiment import launcher as nni_launcher

    start, check = nni_launcher._start_rest_server, nni_launcher._check_rest_server
    managers: list[Any] = []

    def start_rest_server(*args: Any, **kwargs: Any) -> Any:
        managers.append(start(*args, **kwargs))
        return managers[-1]

    def check_rest_server(port: int, retry: int = 3, url_prefix: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return check(port, 1, url_prefix)  # NNI's: one quiet try, a second's wait, one more try
            except Exception:
                if time.monotonic() > deadline or (managers and managers[-1].poll() is not None):
                    raise

    nni_launcher._start_rest_server, nni_launcher._check_rest_server = start_rest_server, check_rest_server
    try:
        yield
    finally:
        nni_launcher._start_rest_server, nni_launcher._check_rest_server = start, check


def _nnictl(args: Sequence[str], env: dict[str, str]) -> int:
    """Run an nnictl command in this process (its own argument parser and function), with ``env`` as the
    environment NNI's manager inherits; its exit status."""
    import warnings

    os.environ.clear()
    os.environ.update(env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnictl imports pkg_resources, which warns that it is deprecated
        from nni.tools.nnictl.nnictl import get_parser
    parsed = get_parser().parse_args(list(args))
    try:
        with patient_manager_start():
            parsed.func(parsed)
    except SystemExit as exc:  # nnictl exits on its errors, having said why
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # nnictl logged what failed (and NNI's manager's stderr): one line, not a traceback
        print(f"error: nnictl {args[0]} failed: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _newest_experiment_on(port: int) -> str | None:
    """The ID of the newest experiment nnictl recorded on ``port`` (the one just created)."""
    from nni.tools.nnictl.config_utils import Experiments

    records = Experiments().get_all_experiments()
    on_port = [(r.get("startTime", 0), i) for i, r in records.items() if r.get("port") == port]
    return max(on_port)[1] if on_port else None


def _experiment_dir(experiment_id: str) -> Path | None:
    from .nni_db import nnictl_record

    log_dir = nnictl_record(experiment_id).get("logDir")
    return Path(log_dir) / experiment_id if log_dir else None


def guard_status(experiment_id: str) -> dict[str, Any] | None:
    """What the guard wrote about itself into the experiment's log folder (None: it did not run)."""
    import json

    folder = _experiment_dir(experiment_id)
    if folder is None:
        return None
    try:
        return json.loads((folder / "log" / GUARD_STATUS).read_text())
    except (OSError, ValueError):
        return None


def wait_for_start(port: int, url_prefix: str | None, timeout: float = START_TIMEOUT) -> str | None:
    """Until the first trial is submitted: None, or why the experiment stopped instead (its errors, or its manager
    gone: stopped by ``nnictl stop``, or failed). After ``timeout`` seconds without a trial, a note says so and the
    experiment goes on."""
    from .nni_rest import NNIClient, NNIUnavailable

    client = NNIClient(port, url_prefix=url_prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = client.get("/check-status")
            if status.get("status") == "ERROR":
                return "; ".join(status.get("errors") or ["the experiment stopped with an error"])
            if status.get("status") in ("DONE", "STOPPED", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL") \
                    or client.get("/trial-jobs"):
                return None
        except NNIUnavailable:
            if not _listening(port):
                return (f"its manager stopped before the first trial (nnictl stop, or a failure: see its "
                        f"log/nnimanager.log); nothing listens on port {port} any more")
        time.sleep(0.5)
    print(f"note: no trial yet after {timeout:.0f} s (is the tuner slow to start? see its log/dispatcher.log); the "
          "experiment goes on, and the WebUI shows its trials when they come", file=sys.stderr)
    return None


def _listening(port: int) -> bool:
    """Whether something accepts connections on this machine's loopback at ``port`` (the manager binds it)."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def launch(action: str, nnictl_args: list[str], bind: list[str], port: int, url_prefix: str | None = None,
           experiment_id: str | None = None) -> int:
    """Run nnictl ``action`` under the guard; report what is reachable and whether the experiment started."""
    if not GUARD_JS.is_file():
        raise CLIError(f"{GUARD_JS} is missing: reinstall the project (pip install -e .)")
    code = _nnictl([action, *nnictl_args], guard_environment(bind))
    if code != 0:
        return code
    experiment_id = experiment_id or _newest_experiment_on(port)
    where = f"http://127.0.0.1:{port}" + (f"/{url_prefix.strip('/')}" if url_prefix else "")
    if bind == ["0.0.0.0"]:
        print(f"warning: the experiment listens on every interface (--bind 0.0.0.0): any host that reaches port "
              f"{port} can read your files and control the experiment through NNI's REST API", file=sys.stderr)
    else:
        others = [a for a in bind if a not in LOOPBACK]
        print(f"WebUI {where}: only this machine can connect" + (
            f"; the training machines reach the manager on {', '.join(others)} port {port} (limit that port to "
            "them with a firewall, or use an SSH tunnel: see the README)" if others else ""))
    status = guard_status(experiment_id) if experiment_id else None
    if status is None:
        print(f"warning: NNI's manager did not load {GUARD_JS.name}; the experiment runs without its fixes "
              "(is NODE_OPTIONS honoured by NNI's node?)", file=sys.stderr)
    else:
        for problem in status.get("problems", []):
            print(f"warning: {problem}", file=sys.stderr)
    if action == "view":
        return 0
    error = wait_for_start(port, url_prefix)
    if error:
        print(f"error: experiment {experiment_id} stopped: {error}", file=sys.stderr)
        if _listening(port):
            print(f"(the WebUI shows it at {where}; end it with: nnictl stop {experiment_id})", file=sys.stderr)
        return 1
    return 0


def build_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="the experiment's YAML config (config.yml)")
    _common(p)
    p.add_argument("--url_prefix", "-u", help="URL prefix of the WebUI and REST API (as nnictl)")
    p.add_argument("--check-only", action="store_true", help="check the config, search space and tuner, start nothing")


def build_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", help="the experiment ID")
    _common(p)
    p.add_argument("--experiment_dir", "-e", help="the experiment's working directory, if nnictl lost it")


def build_view(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", help="the experiment ID")
    p.add_argument("--port", "-p", type=int, default=DEFAULT_PORT, help="the WebUI and REST API port")
    p.add_argument("--bind", action="append", default=[], metavar="ADDRESS",
                   help="also listen on this address (repeatable); 0.0.0.0 listens on every interface")
    p.add_argument("--experiment_dir", "-e", help="the experiment's working directory, if nnictl lost it")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", "-p", type=int, default=DEFAULT_PORT, help="the WebUI and REST API port")
    p.add_argument("--bind", action="append", default=[], metavar="ADDRESS",
                   help="also listen on this address, e.g. the one training machines reach (repeatable; the "
                   "config's nniManagerIp is added by itself); 0.0.0.0 listens on every interface, as plain NNI")
    p.add_argument("--debug", "-d", action="store_true", help="NNI's debug log level")
    p.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground, printing NNI's log")


def cmd_create(args: argparse.Namespace) -> int:
    """``nnictl create`` after every check, under the guard."""
    path = Path(args.config)
    config = load_config(path)
    bind = bind_addresses(args.bind, _manager_ip(config))
    script = None if args.check_only else local_trial_script(config)
    server = None
    if script is not None:  # the trials' warm-start server imports torch while the checks and NNI start
        from .warm_start import prestart

        server = prestart(script, guard_environment(bind))
    try:
        check_experiment_config(path, config)
    except BaseException:
        if server is not None:  # a config that fails its checks leaves nothing running
            server.terminate()
        raise
    if args.check_only:
        print(f"{path}: OK")
        return 0
    forwarded = ["--config", str(path), "--port", str(args.port)]
    forwarded += ["--debug"] * args.debug + ["--foreground"] * args.foreground
    if args.url_prefix:
        forwarded += ["--url_prefix", args.url_prefix]
    return launch("create", forwarded, bind, args.port, args.url_prefix)


def cmd_resume(args: argparse.Namespace) -> int:
    """``nnictl resume`` under the guard."""
    forwarded = [args.id, "--port", str(args.port)] + ["--debug"] * args.debug + ["--foreground"] * args.foreground
    if args.experiment_dir:
        forwarded += ["--experiment_dir", args.experiment_dir]
    bind = bind_addresses(args.bind, _stored_manager_ip(args.id, args.experiment_dir))
    return launch("resume", forwarded, bind, args.port, experiment_id=args.id)


def cmd_view(args: argparse.Namespace) -> int:
    """``nnictl view`` under the guard."""
    forwarded = [args.id, "--port", str(args.port)]
    if args.experiment_dir:
        forwarded += ["--experiment_dir", args.experiment_dir]
    return launch("view", forwarded, bind_addresses(args.bind, None), args.port, experiment_id=args.id)


def _manager_ip(config) -> str | None:
    service = config.training_service
    services = service if isinstance(service, list) else [service]
    ips = [getattr(s, "nni_manager_ip", None) for s in services] + [getattr(config, "nni_manager_ip", None)]
    return next((ip for ip in ips if isinstance(ip, str) and ip), None)


def _stored_manager_ip(experiment_id: str, experiment_dir: str | None) -> str | None:
    try:
        from nni.experiment.launcher import get_stopped_experiment_config_json

        raw = get_stopped_experiment_config_json(experiment_id, experiment_dir) or {}
    except Exception:  # an unknown ID: nnictl itself says so
        return None
    service = raw.get("trainingService")
    services = service if isinstance(service, list) else [service or {}]
    ips = [s.get("nniManagerIp") for s in services if isinstance(s, dict)] + [raw.get("nniManagerIp")]
    return next((ip for ip in ips if isinstance(ip, str) and ip), None)
