"""Optuna samplers for SAFS.

:class:`LAHCSampler` searches activations by late-acceptance hill climbing;
:class:`PositionSeededSampler` wraps any sampler so that a resumed study proposes what an
uninterrupted one would.
"""

from safs_optuna.samplers.lahc import LAHCSampler
from safs_optuna.samplers.seeded import PositionSeededSampler

__all__ = ["LAHCSampler", "PositionSeededSampler"]
