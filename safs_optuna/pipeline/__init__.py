"""The SAFS pipeline as Optuna studies in one storage, run by any number of workers.

:mod:`.stages` is the stage table (what differs between stages, as data); :mod:`.worker` the
worker loop, which claims trials and runs them with heartbeats; :mod:`.bodies` what a stage's
trial does (:mod:`.gradual`: gradual pruning); :mod:`.factories` the samplers, pruners and start
points by name; :mod:`.fidelity` how long search trials train; :mod:`.studies` creates the
studies and :mod:`.status` reads where they stand; :mod:`.results` the report's rows and the
dashboard note; :mod:`.resources` holds what a worker loads once; :mod:`.usercode` the user's own
model, data, loop and test metric; :mod:`.preflight` every check before anything is written;
:mod:`.protocols` is stage 2's space; :mod:`.logs` what a worker prints; :mod:`.launch` runs it
all from one Python call. docs/pipeline.md draws how they call each other.
"""

from .protocols import hparams_from_params, suggest_hparams
from .fidelity import auto_epochs
from .resources import default_threads, load_splits, set_threads
from .results import column_trials, results_table
from .stages import COLUMN_STAGES, STAGES, Stage, stage
from .status import StageStatus
from .studies import PipelineError
from .worker import Pipeline, work_all

__all__ = [
    "COLUMN_STAGES",
    "STAGES",
    "Pipeline",
    "PipelineError",
    "Stage",
    "StageStatus",
    "auto_epochs",
    "column_trials",
    "default_threads",
    "hparams_from_params",
    "load_splits",
    "results_table",
    "set_threads",
    "stage",
    "suggest_hparams",
    "work_all",
]
