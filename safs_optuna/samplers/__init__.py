"""Optuna samplers for SAFS."""

from safs_optuna.samplers.lahc import LAHCSampler

__all__ = ["LAHCSampler"]
