"""LAHCSampler: Late-Acceptance Hill Climbing for Optuna, from the safs-optuna package.

The sampler's code lives in safs-optuna (``safs_optuna.samplers.lahc``), which this package
re-exports so that the OptunaHub copy and the installed one can never differ.
"""

from safs_optuna.samplers.lahc import LAHCSampler

__all__ = ["LAHCSampler"]
