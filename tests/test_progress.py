"""The live stage view: its lines and its in-place redraw."""

from __future__ import annotations

import io

from safs_optuna.pipeline import STAGES, StageStatus
from safs_optuna.progress import LiveView, render, stage_line


def _st(name, finished, budget, running=0, best=None, nothing=None):
    stage = next(s for s in STAGES if s.name == name)
    trial = object() if best is not None else None  # a once stage is done when it has its trial
    st = StageStatus(stage, True, finished, running, 0, 0, budget, best, trial)
    st.found_nothing = nothing
    return st


def test_a_search_stage_line_shows_progress_best_running_and_time_left():
    line = stage_line("activations", _st("activations", 5, 20, running=2, best=31.25), elapsed=100.0)
    assert "█████" in line and "  5/20 " in line and "best 31.25%" in line
    assert "[01:40<05:00]" in line  # 100 s for 5 trials: 300 s for the other 15
    assert line.endswith("<05:00]   2 running") and line.count("running") == 1


def test_done_and_found_nothing_are_marked():
    assert stage_line("dense", _st("dense", 1, 1, best=85.0), elapsed=12.0).endswith("done")
    line = stage_line("hpo", _st("hpo", 10, 10, best=20.0, nothing="hpo: found nothing"), elapsed=60.0)
    assert line.endswith("NOTHING") and "<" not in line  # no time left to estimate


def test_render_aligns_names_and_keeps_a_header():
    lines = render([("dense", _st("dense", 0, 1), None), ("activations", _st("activations", 0, 20), None)],
                   header="quickstart:")
    assert lines[0] == "quickstart:"
    assert lines[1].index("|") == lines[2].index("|")


def test_live_view_redraws_in_place():
    out = io.StringIO()
    frames = iter([["a", "b"], ["c", "d"], ["e", "f"]])
    with LiveView(lambda: next(frames), stream=out, interval=3600):
        pass
    text = out.getvalue()
    # first frame drawn plainly; the closing redraw moves up over both lines and clears them
    assert text.startswith("\x1b[2Ka\n\x1b[2Kb\n")
    assert "\x1b[F\x1b[2K\x1b[F\x1b[2K\x1b[2Kc\n\x1b[2Kd\n" in text
