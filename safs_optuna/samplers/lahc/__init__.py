"""Late-Acceptance Hill Climbing as an Optuna sampler whose state is the storage.

:class:`LAHCSampler` climbs from the all-ReLU start by one-site moves, never proposes a
configuration twice while an unseen neighbour exists, and continues one chain across parallel
workers and resumed studies. ``variant`` picks Burke & Bykov's rules (``"textbook"``) or those of
the SAFS paper's code (``"paper-code"``); docs/lahc.md describes both.
"""

from safs_optuna.samplers.lahc._chain import VARIANTS
from safs_optuna.samplers.lahc._sampler import LAHCSampler

__all__ = ["VARIANTS", "LAHCSampler"]
