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
import functools
import itertools
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from sweep.config.settings import Settings
from sweep.config.space import Dimension
from sweep.errors import ConfigError
from sweep.folder import CONFIG_FILE, TUNE_DIR, SweepFolder
from sweep.practice import boundary
from sweep.practice.refine import refine_space
from sweep.report.model import WarmLogger
from sweep.report.results import TrialRow, collect, rank
from sweep.report.review import Round
from sweep.run import tuner, warm_start
from sweep.run.signals import StopSignals
from sweep.text import format_value, short_key
from sweep.track import tags

if TYPE_CHECKING:  # mlflow: imported by the driver where the store opens
    from sweep.track.tracker import Tracker

FINISHED = "finished"
PARTS = "parts"  # state.json: the parts of an extended sweep (Part.record)


@dataclass(frozen=True)
class Stage:
    fixed: tuple[tuple[str, Any], ...] = ()  # the scientific values this stage runs with
    round: int = 1  # 1-based
    rounds: int = 1  # rounds in its chain
    part: int = 1  # 1-based: a plain sweep extended by ``resume=… num_samples=…`` has several
    parts: int = 1

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
        if self.parts > 1:
            return f"part {self.part}"
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
        if self.part > 1:
            return f"{TUNE_DIR}-part{self.part}"
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
    out_of_time: bool = False  # the time budget was spent before a stage could start

    def rows(self, mode: str) -> list[TrialRow]:
        return rank([row for stage in self.stages for row in stage.rows], mode)

    def rounds(self, mode: str) -> list[Round]:
        """The stages of refinement chains, for the review's round table."""
        return [s.as_round(mode) for s in self.stages if s.stage.rounds > 1]

    def part_lines(self) -> list[str]:
        """An extended sweep, for the summary: which trials ran in which space."""
        done = [s for s in self.stages if s.stage.parts > 1]
        if not done:
            return []
        lines = ["", "Parts (each extension continued the trials before it):"]
        for result in done:
            numbers = [row.number for row in result.rows] or [0]
            changed = "  (space changed)" if result.dims != done[0].dims else ""
            lines.append(
                f"  {result.stage.label}: trials {min(numbers)}-{max(numbers)}, "
                f"{describe_space(result.dims)}{changed}"
            )
        return lines


@dataclass(frozen=True)
class Part:
    """Trials added to a plain sweep at one time: as it was started, then each extension
    (``sweep resume=<folder> num_samples=<new total>``), with the space they searched."""

    trials: int  # num_samples of this part
    dims: tuple[Dimension, ...]

    def record(self) -> dict[str, Any]:
        return {"trials": self.trials, "dims": [dataclasses.asdict(d) for d in self.dims]}

    @classmethod
    def read(cls, record: dict[str, Any]) -> Part:
        def dimension(d: dict[str, Any]) -> Dimension:
            when = tuple((key, tuple(allowed)) for key, allowed in d.get("when", []))
            return Dimension(**{**d, "values": tuple(d["values"]), "when": when})

        dims = (dimension(d) for d in record["dims"])
        return cls(int(record["trials"]), tuple(dims))


def parts(settings: Settings, folder: SweepFolder) -> list[Part]:
    """The parts of the sweep in ``folder`` (one, for a sweep from before parts were
    recorded: it searched the space on the command line)."""
    recorded = folder.read_state().get(PARTS)
    if recorded:
        return [Part.read(record) for record in recorded]
    return [Part(settings.num_samples, settings.dims)]


def extension(settings: Settings, folder: SweepFolder) -> Part | None:
    """The part that a resume with a larger ``num_samples`` adds (None: nothing to add).
    ``num_samples`` is the sweep's total; raises ConfigError where that cannot grow."""
    have = sum(part.trials for part in parts(settings, folder))
    if settings.num_samples <= have:
        return None
    if settings.staged:
        raise ConfigError(
            "num_samples",
            f"{settings.num_samples} would extend {folder.path}, but only a plain sweep "
            "grows; a refinement or scientific sweep's rounds compare equal budgets: start "
            "a new sweep (searcher.warm_start=<folder> reuses its trials)",
        )
    _check_comparable(settings, folder)
    return Part(settings.num_samples - have, settings.dims)


def _check_comparable(settings: Settings, folder: SweepFolder) -> None:
    """The new trials are ranked with the earlier ones: same metric, direction, epochs."""
    config = folder.path / CONFIG_FILE
    first = yaml.safe_load(config.read_text()) if config.is_file() else {}
    several = settings.several_objectives
    now: dict[str, Any] = {
        "metric": list(settings.metrics) if several else settings.metric,
        "mode": [m for _, m in settings.objectives] if several else settings.mode,
        "trainer.max_epochs": settings.max_epochs,
    }
    for key, value in now.items():
        was = functools.reduce(lambda node, part: (node or {}).get(part), key.split("."), first)
        if was is not None and was != value:
            raise ConfigError(
                key,
                f"{value!r} differs from {was!r} in the sweep being extended: its trials are "
                f"ranked together; keep {key}={was}",
            )


def plan(settings: Settings, sweep_parts: list[Part] | None = None) -> Iterator[Stage]:
    """Every stage in the order it runs: one per part of a plain sweep, or one per round
    of each scientific value's chain."""
    if sweep_parts and len(sweep_parts) > 1:
        for number in range(1, len(sweep_parts) + 1):
            yield Stage(part=number, parts=len(sweep_parts))
        return
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
    deadline: float | None = None  # time.time() after which no trial trains (time_budget)
    model_logger: WarmLogger | None = None  # the best model's logger, warmed during the trials

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline


def run(sweep: Sweep) -> Outcome:
    """Run (or resume) every stage of the plan in order."""
    settings = sweep.settings
    sweep_parts = parts(settings, sweep.folder)
    if len(sweep_parts) > 1:
        return run_parts(sweep, sweep_parts)
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
        if isinstance(result, Outcome):  # cut short: by a signal, bad input, the budget
            return dataclasses.replace(result, stages=outcome.stages)
        outcome.stages.append(result)
        chain += result.rows
    return outcome


def run_parts(sweep: Sweep, sweep_parts: list[Part]) -> Outcome:
    """An extended plain sweep: each part after the first continues all trials before it."""
    outcome = Outcome()
    earlier: list[TrialRow] = []
    for stage, part in zip(plan(sweep.settings, sweep_parts), sweep_parts, strict=True):
        result = run_stage(stage, list(part.dims), sweep, part.trials, earlier)
        if isinstance(result, Outcome):  # cut short: by a signal, bad input, the budget
            return dataclasses.replace(result, stages=outcome.stages)
        outcome.stages.append(result)
        earlier = earlier + result.rows
    return outcome


def continued(settings: Settings, earlier: list[TrialRow]) -> tuple[Settings, str]:
    """Settings for a part that continues the sweep's earlier trials, and the line that
    says how: the searcher knows their points (tpe learns from them, quasi_random goes on
    along its Sobol sequence, random draws from a stream of its own), ASHA's rungs start
    from their values, and the new trials are numbered after theirs."""
    known = warm_start.searchable(settings, [(row.values, row.best) for row in earlier])
    searcher = dataclasses.replace(
        settings.searcher,
        points=None,  # tried in the first part
        evaluated=settings.searcher.evaluated + known.evaluated,
        drawn=len(earlier),
    )
    reports = tuple(row.reports(settings.metric) for row in earlier)
    scheduler = dataclasses.replace(settings.scheduler, earlier=reports)
    first = max(row.number for row in earlier) + 1 if earlier else 0
    how = {
        "tpe": f"tpe learns from the {len(known.points)} earlier trials{known.left_out}",
        "quasi_random": f"quasi_random goes on along its Sobol sequence ({len(earlier)} drawn)",
        "random": "random draws new points",
        "bohb": "bohb draws new points (it cannot be given the earlier trials)",
    }[searcher.name]
    if settings.several_objectives and searcher.name == "tpe":
        how = "tpe draws new points (with several objectives it cannot be given earlier trials)"
    if scheduler.name == "asha":
        how += "; ASHA's rungs hold the earlier trials' values"
    changed = dataclasses.replace(
        settings, searcher=searcher, scheduler=scheduler, trial_offset=first
    )
    return changed, how


def _union(a: Dimension, b: Dimension) -> Dimension:
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    return dataclasses.replace(a, low=min(a.low, b.low), high=max(a.high, b.high))


def run_stage(
    stage: Stage,
    space: list[Dimension],
    sweep: Sweep,
    samples: int | None = None,
    earlier: list[TrialRow] | None = None,
) -> StageResult | Outcome:
    """Run one stage, resume it, or read it back when it finished before. ``samples``:
    its trials (default num_samples); ``earlier``: the trials a part continues."""
    settings, folder, tracker = sweep.settings, sweep.folder, sweep.tracker
    # A scientific value is a one-value choice: it reaches the trial's config, its MLflow
    # params and results.csv like any sampled value, and takes the same searcher
    # coordinate in every stage, so the nuisance points match across values.
    dims = [
        Dimension(key, "choice", values=(value,), role="scientific") for key, value in stage.fixed
    ]
    staged = dataclasses.replace(
        settings,
        dims=(*dims, *space),
        seed=settings.seed + stage.round - 1,
        num_samples=samples or settings.num_samples,
    )
    how = ""
    if earlier:
        staged, how = continued(staged, earlier)
    experiment = f"{tuner.storage_path(settings, folder)}/{stage.tune_dir}"
    done = folder.read_state().get("stages", {})
    finished = done.get(stage.tune_dir) == FINISHED
    if not finished and sweep.out_of_time:
        return Outcome(out_of_time=True)  # this stage and those after it do not run
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
    if stage.parts > 1:
        print(f"\n{stage.label}: {staged.num_samples} trials, {describe_space(space)}", flush=True)
        if how and not finished:
            print(f"  {how}", flush=True)
    if finished:
        if stage.nested or stage.parts > 1:
            print("  finished before; read back from its folder", flush=True)
        results = tuner.load_results(staged, experiment)
    else:
        sweep.signals.check()
        logger = sweep.model_logger
        tuned = tuner.fit(
            staged,
            sweep.base,
            tracker,
            sweep.signals,
            experiment,
            sweep.deadline,
            logger.warm if logger is not None else None,
            logger.at_trial_start() if logger is not None else None,
        )
        tracker.writer.flush()
        if tuned.interrupted or tuned.bad_input is not None:
            return Outcome(interrupted=tuned.interrupted, bad_input=tuned.bad_input)
        results = tuned.results
    rows = collect(results, staged)
    for row in rows:
        row.stage = stage.label
    if not stage.nested and not finished:
        _record_ran(folder, stage, staged, len(rows))
    result = StageResult(stage, space, rows)
    if run_id and not finished:
        best = result.best(settings.mode)
        if math.isfinite(best):
            tracker.log_metrics({f"best_{settings.metric}": best}, run_id=run_id)
        tracker.end_run("FINISHED", run_id)
    folder.write_state(stages={**done, stage.tune_dir: FINISHED})
    return result


def _record_ran(folder: SweepFolder, stage: Stage, settings: Settings, ran: int) -> None:
    """A part that the time budget cut short holds the trials that ran, so a resume with
    the same ``num_samples`` runs the rest as an extension."""
    planned = tuner.total_trials(settings)
    records = folder.read_state().get(PARTS)
    if ran >= planned or not records or len(records) < stage.part:
        return
    records[stage.part - 1]["trials"] = math.ceil(ran / (planned // settings.num_samples))
    folder.write_state(**{PARTS: records})


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
