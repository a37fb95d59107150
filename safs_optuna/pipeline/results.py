"""A study's results read from the storage: the report's row and table, the density per layer,
the live view, the warnings, and the SAFS stage's dashboard note (tables by :mod:`safs_optuna.report`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from ..models import sites
from ..optuna_private import study_id
from ..report import COLUMNS, ResultRow, dashboard_note, markdown_table, mean_row, paper_row
from ..storage import staging
from .compute import compute_line
from .stages import Body, Stage

if TYPE_CHECKING:
    from .worker import Pipeline

__all__ = ["column_trials", "density_table", "results_table", "row", "rows", "safs_stage", "table", "view_lines",
           "warnings", "write_note"]


def safs_stage(stages: Sequence[Stage]) -> Stage:
    """The stage whose trial is the SAFS column (the final fine-tune)."""
    return next(s for s in stages if s.column == "SAFS")


def column_trials(pipe: Pipeline) -> dict[str, FrozenTrial | None]:
    """The finished trial behind each report column, by column name."""
    return {s.column: pipe.studies.status(s).best_trial for s in pipe.stages if s.column}


def row(pipe: Pipeline) -> ResultRow:
    """This study's test accuracies, one per report column."""
    trials = column_trials(pipe)
    values = tuple((trials.get(c).user_attrs.get("test_accuracy") if trials.get(c) else None) for c in COLUMNS)
    return ResultRow(f"{pipe.cfg.name} (measured)", values)


def rows(pipe: Pipeline) -> list[ResultRow]:
    """This study's row of test accuracies, then the paper's row for comparison."""
    paper = paper_row(pipe.cfg.model.name, pipe.cfg.data.name)
    return [row(pipe)] + ([paper] if paper else [])


def table(pipe: Pipeline) -> str:
    """This study's results as a Markdown table, with the paper's row."""
    return markdown_table(rows(pipe))


def results_table(pipes: Sequence[Pipeline]) -> str:
    """The results table: one row per seed, their mean ± sd, the paper's row."""
    if len(pipes) == 1:
        return table(pipes[0])
    measured = [row(p) for p in pipes]
    name = pipes[0].cfg.name.rsplit("/seed", 1)[0]
    measured.append(mean_row(measured, f"{name}: mean ± sd over {len(pipes)} seeds"))
    return markdown_table(measured + rows(pipes[0])[1:])


def view_lines(pipe: Pipeline) -> list[str]:
    """The live view of this study: one line per stage (see :mod:`safs_optuna.progress`)."""
    from ..progress import render

    lines = []
    for stage in pipe.stages:
        st = pipe.studies.status(stage)
        end = st.ended if st.done else time.time()
        lines.append((stage.name, st, end - st.started if st.started is not None else None))
    return render(lines, header=f"{pipe.cfg.name}:")


def density_table(pipe: Pipeline) -> str:
    """The sparse network's weights and density per layer, from the trial of the stage that
    sparsified it (the baseline's in a study stored before that stage existed: the masks
    are the same)."""
    sparsify = next(s for s in pipe.stages if s.body == Body.SPARSIFY)
    best = pipe.studies.status(sparsify).best_trial or column_trials(pipe).get("magnitude pruning")
    layers = best.user_attrs.get("layer_density") if best is not None else None
    if not layers:
        return ""
    sp = pipe.cfg.sparsity
    floors = "".join(f", {glob} keeps ≥ {100 * d:g} %" for glob, d in sp.min_density.items())
    gradual = f", gradual over {sp.gradual_epochs} epochs" if sp.gradual_epochs else ""
    head = f"Density per layer after sparsity {sp.ratio:g} ({sp.scope}{floors}{gradual}):"
    if sp.checkpoint:  # the user's masks: their own sparsity, measured
        head = (f"Density per layer of the pruned checkpoint {Path(sp.checkpoint).name} "
                f"(sparsity {best.user_attrs.get('sparsity', float('nan')):.2f} %, measured):")
    lines = [head, "", "| layer | weights | kept % |", "|---|---|---|"]
    lines += [f"| `{name}` | {total} | {kept:.2f} |" for name, (total, kept) in layers.items()]
    return "\n".join(lines)


def warnings(pipe: Pipeline) -> list[str]:
    """One line per finished search stage that found nothing."""
    return [st.found_nothing for st in (pipe.studies.status(s) for s in pipe.stages) if st.found_nothing]


def write_note(pipe: Pipeline, plot: bool = False) -> None:
    """The SAFS stage's dashboard note: the results table, warnings and learned activations.

    Rewritten whenever a column of the table finishes after the final stage (the ablations
    usually do), so the note ends up with every column. Only the worker that finished the
    SAFS stage (``plot``) uploads the activation plot, so two workers never upload it twice;
    a note due before that plot exists is left to that worker, which writes it next."""
    import optuna_dashboard

    res, final = pipe.res, safs_stage(pipe.stages)
    study = pipe.studies.study(final)
    if not plot and not optuna.artifacts.get_all_artifact_meta(study):
        return
    model, _ = res.load(final.name)
    acts = {site: model.get_submodule(site) for site in sites(model)}
    existing = optuna.artifacts.get_all_artifact_meta(study)
    text = table(pipe) + "\n\n" + compute_line(pipe) + "\n\n" + density_table(pipe)
    found = warnings(pipe)
    note, svg = dashboard_note(pipe.cfg, text, found, acts, existing[0].artifact_id if existing else None,
                               study_id(study))
    if svg is not None:
        path = Path(res.tmp.name) / "activations.svg"
        with staging(res.artifacts, path.name, path.parent):
            path.write_text(svg)
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=res.artifacts, file_path=str(path),
                                                       study_or_trial=study, mimetype="image/svg+xml")
        note, _ = dashboard_note(pipe.cfg, text, found, acts, artifact_id, study_id(study))
    optuna_dashboard.save_note(study, note)
