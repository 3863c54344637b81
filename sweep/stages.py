"""A sweep is a plan of stages, run one after another on the same Ray cluster, each
started, resumed, interrupted and collected the same way (:func:`run_stage`).

    sweep                                  # one stage: trials nest under the parent run
    sweep refine_rounds=2                  # rounds 1..3, each num_samples trials
    sweep '+search_space.model.optimizer={type: choice, values: [adam, sgd], role: scientific}'

With ``refine_rounds=R`` a chain of R+1 rounds runs; round r+1 searches the space shrunk
around the top trials of rounds 1..r (sweep/practice/refine.py), with the searcher seeded
``seed + r``. With scientific dimensions, each value (each combination, for several) gets
its own chain with the same budget and searcher seeds, so every value is tuned over the
same nuisance points (paired, fair) and by its own early-stopping scheduler (ASHA never
stops an SGD trial because Adam trials learned faster in the first epochs).

MLflow: a stage of a staged sweep is a run nested under the parent run (named like
``optimizer=sgd · round 2/3``) holding its space as params and its best metric; its
trial runs nest under it and carry a ``sweep.stage`` tag. Each stage keeps its own Tune
experiment folder (``tune`` for a plain sweep, ``tune-<slug>``) and is recorded in
``state.json`` when it finishes, so a resumed sweep reads finished stages back from disk,
restores the interrupted one, and computes later rounds' spaces from the same trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sweep.config.settings import Settings
from sweep.config.space import Dimension
from sweep.folder import TUNE_DIR, SweepFolder
from sweep.practice import boundary
from sweep.practice.refine import refine_space
from sweep.report.results import TrialRow, collect, rank
from sweep.report.review import Round
from sweep.run import tuner
from sweep.run.signals import StopSignals
from sweep.text import format_value, short_key
from sweep.track import tags

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker

FINISHED = "finished"


@dataclass(frozen=True)
class Stage:
    fixed: tuple[tuple[str, Any], ...] = ()  # the scientific values this stage runs with
    round: int = 1  # 1-based
    rounds: int = 1  # rounds in its chain

    @property
    def nested(self) -> bool:
        """A stage of a staged sweep: it has its own MLflow run and Tune folder."""
        return bool(self.fixed) or self.rounds > 1

    @property
    def group(self) -> str:
        """``optimizer=sgd``: the scientific values, shown wherever results are compared."""
        return ", ".join(f"{short_key(key)}={value}" for key, value in self.fixed)

    @property
    def label(self) -> str:
        parts = [self.group] if self.fixed else []
        if self.rounds > 1:
            parts.append(f"round {self.round}/{self.rounds}")
        return " · ".join(parts)

    @property
    def slug(self) -> str:
        parts = [f"{short_key(key)}-{value}" for key, value in self.fixed]
        if self.rounds > 1:
            parts.append(f"r{self.round}")
        return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))

    @property
    def tune_dir(self) -> str:
        return f"{TUNE_DIR}-{self.slug}" if self.nested else TUNE_DIR


@dataclass
class StageResult:
    stage: Stage
    dims: list[Dimension]  # the space this stage searched
    rows: list[TrialRow]

    def best(self, mode: str) -> float:
        pick = max if mode == "max" else min
        return pick((row.best for row in self.rows if math.isfinite(row.best)), default=math.nan)

    def as_round(self, mode: str) -> Round:
        space = {d.key: (d.low, d.high) for d in self.dims if d.is_numeric}
        stage = self.stage
        return Round(stage.label, stage.group, stage.round, len(self.rows), self.best(mode), space)


@dataclass
class Outcome:
    """The stages that finished; whether a signal cut the sweep short; and a mistake in
    the config that the trials showed, as (key, message)."""

    stages: list[StageResult] = field(default_factory=list)
    interrupted: bool = False
    bad_input: tuple[str, str] | None = None

    def rows(self, mode: str) -> list[TrialRow]:
        return rank([row for stage in self.stages for row in stage.rows], mode)

    def rounds(self, mode: str) -> list[Round]:
        """The stages of refinement chains, for the review's round table."""
        return [s.as_round(mode) for s in self.stages if s.stage.rounds > 1]


def plan(settings: Settings) -> Iterator[Stage]:
    """Every stage in the order it runs: one per round of each scientific value's chain."""
    scientific = [d for d in settings.dims if d.role == "scientific"]
    rounds = settings.refine_rounds + 1
    for combo in itertools.product(*(d.values for d in scientific)):
        fixed = tuple(zip((d.key for d in scientific), combo, strict=True))
        for number in range(1, rounds + 1):
            yield Stage(fixed, number, rounds)


@dataclass(frozen=True)
class Sweep:
    """What every stage runs with: settings, the composed config, its folder and MLflow."""

    settings: Settings
    base: dict[str, Any]
    folder: SweepFolder
    tracker: Tracker
    signals: StopSignals


def run(sweep: Sweep) -> Outcome:
    """Run (or resume) every stage of the plan in order."""
    settings = sweep.settings
    outcome = Outcome()
    nuisance = [d for d in settings.dims if d.role != "scientific"]
    space: list[Dimension] = []
    allowed: dict[str, Dimension] = {}
    chain: list[TrialRow] = []
    for stage in plan(settings):
        if stage.round == 1:  # a new chain: the configured space
            space, chain = list(nuisance), []
            # The span each dimension may occupy: the configured range, plus any edge a
            # boundary check extended in an earlier round.
            allowed = {d.key: d for d in nuisance if d.is_numeric}
        else:
            ranked = [row.values for row in rank(chain, settings.mode) if math.isfinite(row.best)]
            warnings = boundary.check(list(allowed.values()), ranked)
            space = refine_space(space, allowed, ranked, warnings)
            current = {d.key: d for d in space}
            allowed = {key: _union(dim, current[key]) for key, dim in allowed.items()}
        result = run_stage(stage, space, sweep)
        if isinstance(result, Outcome):  # cut short: by a signal, or by bad input
            return dataclasses.replace(result, stages=outcome.stages)
        outcome.stages.append(result)
        chain += result.rows
    return outcome


def _union(a: Dimension, b: Dimension) -> Dimension:
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    return dataclasses.replace(a, low=min(a.low, b.low), high=max(a.high, b.high))


def run_stage(stage: Stage, space: list[Dimension], sweep: Sweep) -> StageResult | Outcome:
    """Run one stage, resume it, or read it back when it finished before."""
    settings, folder, tracker = sweep.settings, sweep.folder, sweep.tracker
    # A scientific value is a one-value choice: it reaches the trial's config, its MLflow
    # params and results.csv like any sampled value, and takes the same searcher
    # coordinate in every stage, so the nuisance points match across values.
    dims = [
        Dimension(key, "choice", values=(value,), role="scientific") for key, value in stage.fixed
    ]
    staged = dataclasses.replace(
        settings, dims=(*dims, *space), seed=settings.seed + stage.round - 1
    )
    experiment = f"{tuner.storage_path(settings, folder)}/{stage.tune_dir}"
    done = folder.read_state().get("stages", {})
    finished = done.get(stage.tune_dir) == FINISHED
    run_id = ""
    if stage.nested:
        print(f"\n{stage.label}: {describe_space(space)}", flush=True)
        run_id = tracker.stage_run(
            stage.slug,
            stage.label,
            {tags.ROUND: str(stage.round)},
            {**dict(stage.fixed), **space_params(space)},
            reopen=not finished,
        )
        tracker.nest_trials_under(run_id, {tags.STAGE: stage.slug, tags.ROUND: str(stage.round)})
    if finished:
        if stage.nested:
            print("  finished before; read back from its folder", flush=True)
        results = tuner.load_results(staged, experiment)
    else:
        sweep.signals.check()
        tuned = tuner.fit(staged, sweep.base, tracker, sweep.signals, experiment)
        tracker.writer.flush()
        if tuned.interrupted or tuned.bad_input is not None:
            return Outcome(interrupted=tuned.interrupted, bad_input=tuned.bad_input)
        results = tuned.results
    rows = collect(results, staged)
    for row in rows:
        row.stage = stage.label
    result = StageResult(stage, space, rows)
    if run_id and not finished:
        best = result.best(settings.mode)
        if math.isfinite(best):
            tracker.log_metrics({f"best_{settings.metric}": best}, run_id=run_id)
        tracker.end_run("FINISHED", run_id)
    folder.write_state(stages={**done, stage.tune_dir: FINISHED})
    return result


def describe_space(space: list[Dimension]) -> str:
    parts = []
    for dim in space:
        name = short_key(dim.key)
        if dim.is_numeric:
            parts.append(f"{name} in [{format_value(dim.low)}, {format_value(dim.high)}]")
        else:
            parts.append(f"{name} in {{{', '.join(str(v) for v in dim.values)}}}")
    return ", ".join(parts) or "nothing tuned"


def space_params(space: list[Dimension]) -> dict[str, str]:
    """The stage's space as MLflow params: ``search_space.model.lr: loguniform [1e-4, 3e-2]``."""
    return {
        f"search_space.{dim.key}": f"{dim.type} [{dim.low:.6g}, {dim.high:.6g}]"
        if dim.is_numeric
        else f"{dim.type} {list(dim.values)}"
        for dim in space
    }
