"""safs-optuna: SAFS (Learning Activation Functions for Sparse Neural Networks) as an Optuna plugin.

Every piece works on its own inside a user's Optuna study::

    import safs_optuna as so
    splits = so.data.load("quickstart")
    model = so.make_searchable(my_model)
    so.magnitude_prune(model, ratio=0.99, scope="layer")
    space = so.ActivationSpace.preset("safs")
    ...
"""

__version__ = "0.1.0"

from . import data
from .activation import OperatorTree, TreeActivation
from .models import MODELS, build_model, make_searchable, sites
from .operators import BINARY, UNARY
from .pruners import DivergencePruner, IncumbentPruner
from .ranking import chance_band, trial_score
from .samplers import LAHCSampler, PositionSeededSampler
from .space import ActivationSpace
from .sparsity import finalize, magnitude_prune, sparsity_report
from .training import Diverged, DivergedError, HParams, evaluate, fit


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    # ``run`` (the whole pipeline) is loaded on first use: importing the plugin pieces alone
    # should not load the pipeline, the storage and the CLI's dependencies.
    if name == "run":
        from .pipeline.launch import run

        return run
    raise AttributeError(f"module 'safs_optuna' has no attribute {name!r}")

# ``Diverged`` is importable as a deprecated alias of DivergedError but left out of __all__.
__all__ = [
    "BINARY", "MODELS", "UNARY", "ActivationSpace", "DivergedError", "DivergencePruner", "HParams",
    "IncumbentPruner", "LAHCSampler", "OperatorTree", "PositionSeededSampler", "TreeActivation",
    "build_model", "chance_band", "data", "evaluate", "finalize", "fit", "magnitude_prune",
    "make_searchable", "run", "sites", "sparsity_report", "trial_score",
]
