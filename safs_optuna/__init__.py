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

# ``Diverged`` is importable as a deprecated alias of DivergedError but left out of __all__.
__all__ = [
    "BINARY", "MODELS", "UNARY", "ActivationSpace", "DivergedError", "DivergencePruner", "HParams",
    "IncumbentPruner", "LAHCSampler", "OperatorTree", "PositionSeededSampler", "TreeActivation",
    "build_model", "chance_band", "data", "evaluate", "finalize", "fit", "magnitude_prune",
    "make_searchable", "sites", "sparsity_report", "trial_score",
]
