"""A sweep in stages: coarse-to-fine rounds, and one sub-sweep per scientific value.

    sweep                                  # one stage: trials nest under the parent run
    sweep refine_rounds=2                  # rounds 1..3, each num_samples trials
    sweep '+search_space.model.optimizer={type: choice, values: [adam, sgd], role: scientific}'

A plain sweep is one stage, exactly as before. With ``refine_rounds=R`` a chain of R+1
rounds runs; round r+1 searches the space shrunk around the top trials of rounds 1..r
(sweep/refine.py), with the searcher seeded ``seed + r``. With scientific dimensions, each
value (each combination, for several) gets its own chain with the same budget and the same
searcher seeds, so every value is tuned over the same nuisance points (paired, fair) and
by its own early-stopping scheduler (ASHA never stops an SGD trial because Adam trials
learned faster in the first epochs). Stages run one after another on the same Ray cluster.

MLflow: each stage is a run nested under the sweep's parent run (named like
``optimizer=sgd · round 2/3``) holding that stage's space as params and its best metric;
the stage's trial runs nest under it and carry a ``sweep.stage`` tag. Each stage keeps its
own Tune experiment folder (``tune-<slug>``) and is recorded in ``state.json`` when it
finishes, so a resumed sweep reads finished stages back from disk, restores the
interrupted one, and computes the later rounds' spaces from the same finished trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from sweep import boundary, report, signals
from sweep.display import format_value
from sweep.folder import TUNE_DIR, SweepFolder
from sweep.refine import refine_space
from sweep.settings import Settings
from sweep.space import Dimension
from sweep.tracking import Tracker

ROUND_TAG = "sweep.round"


@dataclass(frozen=True)
class Stage:
    fixed: tuple[tuple[str, Any], ...]  # the scientific values this stage runs with
    round: int  # 1-based
    rounds: int  # rounds in its chain

    @property
    def group(self) -> str:
        """``optimizer=sgd``: the scientific values, shown wherever results are compared."""
        return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.fixed)

    @property
    def label(self) -> str:
        parts = [self.group] if self.fixed else []
        if self.rounds > 1:
            parts.append(f"round {self.round}/{self.rounds}")
        return " · ".join(parts)

    @property
    def slug(self) -> str:
        parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in self.fixed]
        if self.rounds > 1:
            parts.append(f"r{self.round}")
        return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))


@dataclass
class StageResult:
    stage: Stage
    dims: list[Dimension]  # the space this stage searched
    rows: list[report.TrialRow]

    def best(self, mode: str) -> float:
        values = [row.best for row in self.rows if math.isfinite(row.best)]
        if not values:
            return math.nan
        return max(values) if mode == "max" else min(values)


def is_staged(settings: Settings) -> bool:
    return settings.refine_rounds > 0 or any(d.role == "scientific" for d in settings.dims)


def run(
    settings: Settings, base: dict[str, Any], folder: SweepFolder, tracker: Tracker
) -> tuple[list[StageResult], bool]:
    """Run every stage in order; returns their results and whether one was interrupted."""
    scientific = [d for d in settings.dims if d.role == "scientific"]
    nuisance = [d for d in settings.dims if d.role != "scientific"]
    combos = list(itertools.product(*(d.values for d in scientific)))
    rounds = settings.refine_rounds + 1
    results: list[StageResult] = []
    for combo in combos:
        fixed = tuple(zip((d.key for d in scientific), combo, strict=True))
        space = list(nuisance)
        # The span each dimension may occupy: the configured range, plus any edge a
        # boundary check extended in an earlier round.
        allowed = {d.key: d for d in nuisance if d.is_numeric}
        chain: list[report.TrialRow] = []
        for number in range(1, rounds + 1):
            stage = Stage(fixed, number, rounds)
            if number > 1:
                ranked = [
                    row.values
                    for row in report.rank(chain, settings.mode)
                    if math.isfinite(row.best)
                ]
                warnings = boundary.check(list(allowed.values()), ranked)
                space = refine_space(space, allowed, ranked, warnings)
                current = {d.key: d for d in space}
                allowed = {key: _union(dim, current[key]) for key, dim in allowed.items()}
            result, interrupted = run_stage(stage, space, settings, base, folder, tracker)
            if interrupted or signals.received():
                return results, True
            results.append(result)
            chain += result.rows
    return results, False


def _union(a: Dimension, b: Dimension) -> Dimension:
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    return dataclasses.replace(a, low=min(a.low, b.low), high=max(a.high, b.high))


def run_stage(
    stage: Stage,
    space: list[Dimension],
    settings: Settings,
    base: dict[str, Any],
    folder: SweepFolder,
    tracker: Tracker,
) -> tuple[StageResult, bool]:
    from sweep import tuning

    # A scientific value is a one-value choice: it reaches the trial's config, its MLflow
    # params and results.csv like any sampled value, and takes the same searcher
    # coordinate in every stage, so the nuisance points match across values.
    dims = [
        Dimension(key, "choice", values=(value,), role="scientific") for key, value in stage.fixed
    ]
    dims += space
    staged = dataclasses.replace(settings, dims=tuple(dims), seed=settings.seed + stage.round - 1)
    name = f"{TUNE_DIR}-{stage.slug}"
    done = folder.read_state().get("stages", {})
    print(f"\n{stage.label}: {describe_space(space)}", flush=True)
    run_id = tracker.stage_run(
        stage.slug,
        stage.label,
        {ROUND_TAG: str(stage.round)},
        {**dict(stage.fixed), **space_params(space)},
    )
    tracker.nest_trials_under(run_id, {"sweep.stage": stage.slug, ROUND_TAG: str(stage.round)})
    if done.get(stage.slug) == "finished":
        print("  finished before; read back from its folder", flush=True)
        results, interrupted = tuning.load_results(staged, folder, name), False
    else:
        results, interrupted = tuning.fit(staged, base, folder, tracker, name=name)
    tracker.writer.flush()
    rows = report.collect(results, staged)
    for row in rows:
        row.stage = stage.label
    result = StageResult(stage, space, rows)
    if interrupted:
        tracker.client.set_terminated(run_id, status="KILLED")
        return result, True
    best = result.best(settings.mode)
    if math.isfinite(best):
        tracker.log_metrics({f"best_{settings.metric}": best}, run_id=run_id)
    tracker.client.set_terminated(run_id, status="FINISHED")
    folder.write_state(stages={**done, stage.slug: "finished"})
    return result, False


def describe_space(space: list[Dimension]) -> str:
    parts = []
    for dim in space:
        name = dim.key.rsplit(".", 1)[-1]
        if dim.is_numeric:
            parts.append(f"{name} in [{format_value(dim.low)}, {format_value(dim.high)}]")
        else:
            parts.append(f"{name} in {{{', '.join(str(v) for v in dim.values)}}}")
    return ", ".join(parts) or "nothing tuned"


def space_params(space: list[Dimension]) -> dict[str, str]:
    """The stage's space as MLflow params: ``search_space.model.lr: loguniform [1e-4, 3e-2]``."""
    params = {}
    for dim in space:
        if dim.is_numeric:
            params[f"search_space.{dim.key}"] = f"{dim.type} [{dim.low:.6g}, {dim.high:.6g}]"
        else:
            params[f"search_space.{dim.key}"] = f"{dim.type} {list(dim.values)}"
    return params
