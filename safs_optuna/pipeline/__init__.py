"""The SAFS pipeline as Optuna studies in one storage, run by any number of workers.

:mod:`.stages` is the stage table (what differs between stages, as data); :mod:`.studies` creates
the studies and reads their status; :mod:`.resources` holds what a worker loads once;
:mod:`.usercode` the user's own model, data, loop and test metric; :mod:`.preflight` every check
before anything is written; :mod:`.runner` is the worker loop and the stage bodies;
:mod:`.protocols` is stage 2's space; :mod:`.launch` runs it all from one Python call.
"""

from .protocols import hparams_from_params, suggest_hparams
from .resources import default_threads, load_splits, set_threads
from .runner import Pipeline, auto_epochs, work_all
from .stages import COLUMN_STAGES, STAGES, Stage, stage
from .studies import PipelineError, StageStatus

__all__ = [
    "COLUMN_STAGES",
    "STAGES",
    "Pipeline",
    "PipelineError",
    "Stage",
    "StageStatus",
    "auto_epochs",
    "default_threads",
    "hparams_from_params",
    "load_splits",
    "set_threads",
    "stage",
    "suggest_hparams",
    "work_all",
]
