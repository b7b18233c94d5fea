"""Fine-tune one EfficientNet on an image folder: an NNI trial, or a script you run by hand.

By hand (no NNI needed)::

    python main_efficientnet.py --data digits --arch lite0 --width 0.25 --resolution 32 --epochs 3

As an NNI trial (``nni.get_next_parameter()`` supplies the architecture and hyperparameters)::

    trialCommand: python main_efficientnet.py --data digits --weights lite0 --request-from-nni

Outputs go to ``$NNI_OUTPUT_DIR`` under NNI, else ``--output-dir`` (default ``runs/<data>-<arch hash>``):
``checkpoint.pth.tar`` (every epoch, atomic), ``model_best.pth.tar``, ``result.json``, ``log.txt`` and TensorBoard
scalars in ``tensorboard/``. Rerunning a killed trial continues from its last completed epoch.
Errors the user can fix print one ``error:`` line on stderr and exit with status 2.

Progressive learning (EfficientNetV2): ``--progressive-stages 4`` trains in stages of growing image size, dropout,
RandAugment and mixup (``efficientnet/progressive.py``). Data-parallel on several GPUs or machines::

    python -m torch.distributed.run --standalone --nproc_per_node 2 main_efficientnet.py --data digits ...

Each rank trains on its shard; rank 0 alone talks to NNI and writes checkpoints, logs and results. The steps of the
loop below live in :mod:`efficientnet.trainer`; the settings, with their defaults, in
:class:`efficientnet.trial_config.TrialConfig` (``--help`` lists them).
"""

from __future__ import annotations

import time

LAUNCHED = time.time()  # before the heavy imports: the trial's start-up line counts them

import sys

if __name__ == "__main__":
    from pathlib import Path

    from efficientnet.environment import exit_if_incomplete
    from efficientnet.warm_start import hand_over

    exit_if_incomplete()  # started by a Python without the project's packages: one line, not a traceback
    hand_over(Path(__file__), sys.argv[1:], LAUNCHED)  # an NNI trial trains in a warm process's fork, if one answers

from typing import Any, Sequence

from efficientnet import distributed, nni_io
from efficientnet.atomic_files import OutputError
from efficientnet.checkpoint import CheckpointError
from efficientnet.data import DataError
from efficientnet.datacache import DataCacheError
from efficientnet.progressive import ProgressiveError
from efficientnet.spec import SpecError
from efficientnet.stopping import StopSignals, TrialStopped, die_by, exit_now
from efficientnet.trainer import Trial
from efficientnet.trial_config import ConfigError, TrialConfig, parse_config
from efficientnet.training import TrainingError
from efficientnet.weights import WeightsError

USER_ERRORS = (ConfigError, DataError, DataCacheError, CheckpointError, OutputError, SpecError, WeightsError,
               TrainingError, ProgressiveError)
EXIT_USER_ERROR = 2


def run(cfg: TrialConfig, launched: float | None = None) -> dict[str, Any]:
    """Train one trial end to end; return the final result dict. ``launched`` (a ``time.time()``) is when the
    process began, for the log's start-up line.

    Under ``torchrun`` every rank runs this: rank 0 asks NNI for the proposal and hands it to the others.
    """
    dist_info, dist_device = distributed.init(cfg.device)
    proposal = nni_io.get_proposal(cfg.request_from_nni) if dist_info.is_main else None
    proposal = distributed.broadcast_object(proposal, dist_info)
    with Trial.setup(cfg, proposal, dist_info, dist_device, launched) as trial:
        for epoch in trial.epochs():
            trial.begin_epoch(epoch)
            train = trial.train_epoch(epoch)
            val = trial.validate()
            trial.close_epoch(train, val)
        result = trial.finish()
    distributed.shutdown(dist_info)  # after a clean end only: a rank tearing down alone can hang the others
    return result


def main(argv: Sequence[str] | None = None, launched: float | None = None) -> int:
    """Entry point: returns 0, or 2 after one ``error:`` line on stderr for a problem the user can fix.
    ``launched``: when the process began (see :func:`run`).

    SIGINT (Ctrl-C, NNI's assessor or ``nnictl stop``) and SIGTERM stop the trial at a safe point: one line says
    what was kept, then the process ends by that signal (NNI records EARLY_STOPPED or USER_CANCELED, not FAILED).
    """
    stopped: TrialStopped | None = None
    with StopSignals():
        try:
            run(parse_config(argv), launched)
        except USER_ERRORS as exc:
            if distributed.from_env().is_main:  # every rank meets the same bad input: one line, from rank 0
                print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except TrialStopped as exc:
            stopped = exc
    if stopped is not None:
        if distributed.from_env().is_main:
            print(f"stopped by {stopped.name}{stopped.detail}; rerun the same command to resume", file=sys.stderr)
        die_by(stopped.signum)
    return 0


if __name__ == "__main__":
    exit_now(main(launched=LAUNCHED))  # without Python's slow teardown of torch (about 1 s per trial)
