"""Following the pipelines through ``work_all`` never re-enters a module of ``safs_optuna.pipeline``
that a call has left: every call stack is traced while a tiny study runs (docs/pipeline.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import safs_optuna
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline, work_all

from ._tiny import write_config

pytestmark = pytest.mark.slow  # every call of a whole run is traced: minutes

PACKAGE = Path(safs_optuna.__file__).resolve().parent
OUTSIDE = "~"  # a frame of another package (Optuna, torch): leaving through it and coming back is re-entering


class CallTracer:
    """Records, for every call into the package, the modules on the stack (consecutive frames of
    one module as one entry), and the stacks on which a ``pipeline`` module comes back after
    another module was entered."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self.edges: set[tuple[str, str]] = set()
        self.reentries: set[tuple[str, ...]] = set()

    def _module(self, filename: str) -> str:
        name = self._names.get(filename)
        if name is None:
            path = Path(filename).resolve()
            name = (".".join(path.relative_to(PACKAGE).with_suffix("").parts)
                    if path.is_relative_to(PACKAGE) else OUTSIDE)
            self._names[filename] = name
        return name

    def __call__(self, frame, event: str, arg: object) -> None:
        if event != "call" or self._module(frame.f_code.co_filename) == OUTSIDE:
            return
        stack: list[str] = []
        f = frame
        while f is not None:
            name = self._module(f.f_code.co_filename)
            if not stack or stack[-1] != name:
                stack.append(name)
            f = f.f_back
        stack.reverse()
        stack = stack[stack.index("pipeline.worker"):] if "pipeline.worker" in stack else []
        ours = [m for m in stack if m.startswith("pipeline.")]
        if len(ours) != len(set(ours)):
            self.reentries.add(tuple(stack))
        mods = [m for m in stack if m != OUTSIDE]
        self.edges.update((a, b) for a, b in zip(mods, mods[1:]) if a.startswith("pipeline."))


def test_work_all_never_comes_back_to_a_pipeline_module_it_has_left(tmp_path):
    cfg = load_config(write_config(tmp_path, trials=2), {"hpo.trials": 2})
    pipe = Pipeline(cfg, log=lambda msg: None)
    tracer = CallTracer()
    sys.setprofile(tracer)
    try:
        work_all([pipe], poll=0.05)
    finally:
        sys.setprofile(None)
    assert not tracer.reentries, sorted(" -> ".join(s) for s in tracer.reentries)[:5]
    # The trace saw the whole run: the stage bodies training, the studies, the dashboard note.
    for edge in (("pipeline.worker", "pipeline.bodies"), ("pipeline.bodies", "training"),
                 ("pipeline.worker", "pipeline.studies"), ("pipeline.worker", "pipeline.results")):
        assert edge in tracer.edges, edge
