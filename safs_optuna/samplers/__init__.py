"""Optuna samplers for SAFS.

:class:`LAHCSampler` searches activations by late-acceptance hill climbing;
:class:`PositionSeededSampler` wraps any sampler so that a resumed study proposes what an
uninterrupted one would; :class:`SurrogateSampler` proposes what a nearest-neighbour regression
on the finished trials predicts best.
"""

from safs_optuna.samplers.lahc import LAHCSampler
from safs_optuna.samplers.seeded import PositionSeededSampler
from safs_optuna.samplers.surrogate import SurrogateSampler

__all__ = ["LAHCSampler", "PositionSeededSampler", "SurrogateSampler"]
