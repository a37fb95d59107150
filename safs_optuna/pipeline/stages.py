"""The stage table: everything that differs between the stages of the pipeline, as data.

==============  ======  ============================================================
stage           kind    what it does
==============  ======  ============================================================
dense           once    train the dense network (or load the user's checkpoint)
sparse          once    sparsify the dense network: one-shot, or gradually over ``gradual_epochs``
baseline        once    fine-tune the sparse network with its own activations and the default protocol
activations     search  stage 1: one operator tree per site (LAHC), α = β = 1
hpo             search  stage 2: the fine-tuning protocol and learned α/β, stage-1 trees
final           once    the winner of both stages, full fine-tune, test accuracy (SAFS)
hpo-relu        search  ablation: stage 2 alone, the network's own activations with learned α/β
stage1          once    ablation: stage-1 winner with the default protocol
stage2          once    ablation: hpo-relu winner, full fine-tune
baseline-long   once    with ``baseline_long``: the network's own activations, fine-tuned for
                        as many images as stages 1 and 2 trained ("ReLU, same compute")
==============  ======  ============================================================

Every stage after ``sparse`` starts from the weights and masks that ``sparse`` stored; given a
user's pruned network (``[sparsity] checkpoint``), ``sparse`` loads it and ``dense`` is skipped. Other
modules never compare stage names: they read these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Body", "Epochs", "Kind", "Searches", "Stage", "STAGES", "COLUMN_STAGES", "stage"]


class _Word(str, Enum):
    """A value of the stage table that is also its word: compares equal to it, prints as it."""

    def __str__(self) -> str:
        return self.value


class Kind(_Word):
    """How a stage runs: one queued trial run by exactly one worker, or a search of many trials."""

    ONCE = "once"
    SEARCH = "search"


class Body(_Word):
    """What a stage's trial does (:data:`safs_optuna.pipeline.bodies.BODIES` maps each to its function)."""

    DENSE = "dense"
    SPARSIFY = "sparsify"
    FINETUNE = "finetune"
    SEARCH = "search"


class Searches(_Word):
    """What a search trial draws."""

    TREES = "trees"
    PROTOCOL = "protocol"


class Epochs(_Word):
    """How many epochs a "finetune" trial trains."""

    FINAL = "final"  # the full fine-tune's, ``[final] epochs``
    SPENT = "spent"  # as many (in training images) as the search stages upstream trained together


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: an Optuna study named ``<study name>/<stage name>``.

    Attributes:
        name: The study's suffix and the name users type (``--stage``, ``status``).
        kind: :class:`Kind`: ``once`` (one queued trial, run by exactly one worker) or ``search``.
        needs: Stages that must be done before this one starts.
        ablation: Only with ``ablations = true`` in the config (the paper's ablation columns).
        body: :class:`Body`, what a trial does: ``dense`` (train or load the dense network),
            ``sparsify`` (prune the dense network to ``[sparsity]``, one-shot or gradually; its
            checkpoint is the sparse network every later stage starts from), ``finetune`` (a full
            fine-tune of the sparse network, reported on the test split) or ``search`` (a short
            fine-tune scored on the validation split).
        section: The config section with the search stage's sampler, pruner, trials and epochs.
        searches: :class:`Searches`, what a search trial draws: ``trees`` (one per site) or
            ``protocol``.
        trees_from: Whose activations: the winner of this search stage, or ``None`` for the
            network's own activation at every site (drawn by the trial when ``searches`` is trees).
        protocol_from: Whose fine-tuning protocol: the winner of this search stage, or ``None``
            for the config's default protocol (drawn by the trial when ``searches`` is protocol).
        learn_scale: Whether α and β are learned: ``True``/``False``, or ``None`` to take it from
            the protocol (the winner's, or the trial's draw from ``[hpo.space] learn_scale``).
        column: The report column this stage fills (test accuracy of its trial).
        skipped_by: A config key (``"section.key"``) whose value, when set, makes the stage needless:
            the stage is left out, and so are the needs of others on it.
        enabled_by: A top-level boolean config key that must be true for the stage to run
            (``None``: no such key).
        epochs: :class:`Epochs`, how long a ``finetune`` trial trains: ``final`` (``[final] epochs``)
            or ``spent`` (the full-data epochs whose images equal what the search stages it needs,
            directly or through others, trained: every trial, pruned and failed ones included).
        seed: Mixed into the config's seed for the stage's sampler (search stages; once stages
            draw nothing). Fixed per stage rather than its position in the table, so that a
            stage added to the table changes no other stage's draws and a stored study resumes
            drawing what it would have.
    """

    name: str
    kind: Kind
    needs: tuple[str, ...] = ()
    ablation: bool = False
    body: Body = Body.FINETUNE
    section: str | None = None
    searches: Searches | None = None
    trees_from: str | None = None
    protocol_from: str | None = None
    learn_scale: bool | None = False
    column: str | None = None
    skipped_by: str | None = None
    enabled_by: str | None = None
    epochs: Epochs = Epochs.FINAL
    seed: int = 0


# Order is priority: a free worker takes the first stage with work it can claim, so the
# critical path (dense -> activations -> hpo -> final) goes first and ablations fill waits.
STAGES: tuple[Stage, ...] = (
    # A user's pruned network ([sparsity] checkpoint) is loaded by "sparse": no dense stage.
    Stage("dense", Kind.ONCE, body=Body.DENSE, column="dense", skipped_by="sparsity.checkpoint"),
    Stage("sparse", Kind.ONCE, ("dense",), body=Body.SPARSIFY),
    Stage("baseline", Kind.ONCE, ("sparse",), column="magnitude pruning"),
    Stage("activations", Kind.SEARCH, ("sparse",), body=Body.SEARCH, section="activations",
          searches=Searches.TREES, seed=2),
    Stage("hpo", Kind.SEARCH, ("activations",), body=Body.SEARCH, section="hpo",
          searches=Searches.PROTOCOL, trees_from="activations", learn_scale=None, seed=3),
    Stage("final", Kind.ONCE, ("hpo",), trees_from="activations", protocol_from="hpo", learn_scale=None,
          column="SAFS"),
    Stage("hpo-relu", Kind.SEARCH, ("sparse",), ablation=True, body=Body.SEARCH, section="hpo",
          searches=Searches.PROTOCOL, learn_scale=True, seed=5),
    Stage("stage1", Kind.ONCE, ("activations",), ablation=True, trees_from="activations", column="stage 1"),
    Stage("stage2", Kind.ONCE, ("hpo-relu",), ablation=True, protocol_from="hpo-relu", learn_scale=True,
          column="stage 2"),
    # "Could that compute have fine-tuned ReLU longer?": the baseline, trained as long as SAFS searched.
    Stage("baseline-long", Kind.ONCE, ("hpo",), enabled_by="baseline_long", epochs=Epochs.SPENT,
          column="ReLU, same compute"),
)

COLUMN_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.column)


def stage(name: Stage | str) -> Stage:
    """The stage called ``name`` (a :class:`Stage` passes through)."""
    if isinstance(name, Stage):
        return name
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")
