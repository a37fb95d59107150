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

import importlib
from typing import Any

# Every public name and the module that defines it. Loaded on first use (PEP 562), so that the
# pieces that need only Optuna and NumPy — the samplers, the pruners, the ranking rule — import
# without torch (``import safs_optuna.samplers``, the OptunaHub package), and so that importing
# one piece does not load the pipeline, the storage and the CLI's dependencies.
_EXPORTS: dict[str, str] = {
    "data": "", "OperatorTree": "activation", "TreeActivation": "activation", "MODELS": "models",
    "build_model": "models", "make_searchable": "models", "sites": "models", "BINARY": "operators",
    "UNARY": "operators", "DivergencePruner": "pruners", "HalvingPruner": "pruners",
    "IncumbentPruner": "pruners", "chance_band": "ranking", "trial_score": "ranking",
    "LAHCSampler": "samplers", "PositionSeededSampler": "samplers", "SurrogateSampler": "samplers",
    "zero_cost": "", "ActivationSpace": "space", "finalize": "sparsity",
    "magnitude_prune": "sparsity", "sparsity_report": "sparsity", "Diverged": "training",
    "DivergedError": "training", "HParams": "training", "evaluate": "training", "fit": "training",
    "run": "pipeline.launch",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'safs_optuna' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = importlib.import_module(f"{__name__}.{module or name}")
    value = value if not module else getattr(value, name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# ``Diverged`` is importable as a deprecated alias of DivergedError but left out of __all__.
__all__ = [
    "BINARY", "MODELS", "UNARY", "ActivationSpace", "DivergedError", "DivergencePruner", "HParams",
    "HalvingPruner", "IncumbentPruner", "LAHCSampler", "OperatorTree", "PositionSeededSampler",
    "SurrogateSampler", "TreeActivation", "build_model", "chance_band", "data", "evaluate", "finalize",
    "fit", "magnitude_prune", "make_searchable", "run", "sites", "sparsity_report", "trial_score",
    "zero_cost",
]
