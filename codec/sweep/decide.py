"""``codec-sweep decide SWEEP --metric M``: add seeds only where a comparison is still open.

Each round reads the sweep's finished runs from MLflow, works out every pair's sequential verdict
(``analysis.sequential``: a group-sequential paired t-test with Holm's correction across pairs),
and launches the next look's seeds for the designs of undecided pairs only, through the sweep's
own launcher (its recorded ``hydra/launcher`` overrides) into ``<sweep dir>/decide``. The added runs
are children of the sweep's MLflow parent, tagged ``decide_round``. It stops when every pair is
decided, at the seed cap, or when the next round would pass the device-hour budget.

The design (metric, looks, alpha) is fixed by the first call in ``<sweep dir>/decide.json``: the
error control holds only if the looks are not moved after seeing data. The verdicts are a function
of the data, so an interrupted call resumes where it stopped and a second call adds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.loading import load_sweep
from analysis.sequential import (
    SequentialDesign,
    default_looks,
    design_values,
    labelled_runs,
    seeds_needed,
    verdict_table,
)
from codec.sweep.registry import Sweep

DECIDE_FILE = "decide.json"
SEED_KEY = "trainer.seed"
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


class DecideError(RuntimeError):
    """A decide request that cannot be carried out; says why."""


@dataclass
class DecidePlan:
    """What the first call fixed, and the rounds launched since."""

    metric: str
    higher_is_better: bool
    looks: list[int]
    alpha: float
    rho: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stopped_by_budget: bool = False  # the last call stopped before a round would pass --budget

    @property
    def design(self) -> SequentialDesign:
        return SequentialDesign(tuple(self.looks), self.alpha, self.rho)

    def save(self, sweep_dir: Path) -> None:
        path = Path(sweep_dir) / DECIDE_FILE
        tmp = path.with_name(f".{DECIDE_FILE}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def start_round(self, added: dict[str, list[int]], sweep_dir: Path) -> int:
        """Record the round about to launch; an interrupted round (the same seeds again) keeps its number."""
        number = len(self.rounds) + 1
        if self.rounds and self.rounds[-1]["seeds"] == added:
            number = int(self.rounds.pop()["round"])
        self.rounds.append({"round": number, "time": time.time(), "seeds": added})
        self.save(sweep_dir)
        return number

    @classmethod
    def load(cls, sweep_dir: Path) -> DecidePlan | None:
        path = Path(sweep_dir) / DECIDE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def fixed_plan(sweep_dir: Path, metric: str, higher: bool, first: int, max_seeds: int, alpha: float) -> DecidePlan:
    """The plan of the first call; a later call must ask for the same, or it is refused."""
    plan = DecidePlan.load(sweep_dir)
    if plan is None:
        looks = default_looks(first, max_seeds)
        plan = DecidePlan(metric, higher, list(looks), alpha, SequentialDesign().rho)
        plan.save(sweep_dir)
        return plan
    if (plan.metric, plan.looks[-1], plan.alpha) != (metric, max_seeds, alpha):
        raise DecideError(
            f"{sweep_dir / DECIDE_FILE} fixed --metric {plan.metric} --max-seeds {plan.looks[-1]} --alpha {plan.alpha} "
            "at the first call; the error control needs them unchanged (delete the file to start a new design)"
        )
    return plan


@dataclass
class Round:
    """One look's state: the sweep's values per design and what it would take to go on."""

    values: dict[str, dict[int, float]]
    table: Any
    targets: dict[str, int]
    spent: float
    cost_per_run: float


def read_round(frame: pd.DataFrame, plan: DecidePlan, out_of_budget: bool = False) -> Round:
    """Verdicts from the sweep's runs (``load_sweep``), and the seed count each undecided design needs next."""
    values = design_values(frame, plan.metric)
    if len(values) < 2:
        raise DecideError(f"the sweep has {len(values)} design(s) with finished runs; deciding needs two or more")
    table = verdict_table(values, plan.design, plan.higher_is_better, out_of_budget)
    targets: dict[str, int] = {}
    for _, row in table[~table["decided"]].iterrows():
        later = [look for look in plan.looks if look > row["seeds"]]
        if later:
            for name in (row["design_a"], row["design_b"]):
                targets[name] = max(targets.get(name, 0), later[0])
    costs = frame.get("cost/device_hours")
    spent = float(costs.fillna(0).sum()) if costs is not None else 0.0
    per_run = float(costs.dropna().mean()) if costs is not None and costs.notna().any() else 0.0
    return Round(values, table, targets, spent, per_run)


def seeds_to_add(state: Round) -> dict[str, list[int]]:
    """For each design to grow, the seeds it lacks up to its target, taken in the same order for
    every design (the sweep's seeds, then new ones), so the added runs stay paired."""
    known = sorted({seed for seeds in state.values.values() for seed in seeds})
    order = known + list(range(max(known) + 1, max(known) + 1 + max(state.targets.values(), default=0)))
    added = {}
    for name, target in sorted(state.targets.items()):
        have = set(state.values[name])
        missing = [seed for seed in order if seed not in have][: max(0, target - len(have))]
        if missing:
            added[name] = missing
    return added


def launch_round(sweep: Sweep, sweep_dir: Path, labels: dict[str, list[str]], added: dict[str, list[int]], number: int):
    """One multirun per design, through the sweep's launcher, joining its MLflow parent."""
    for name, seeds in added.items():
        overrides = [o for o in labels[name] if o.split("=", 1)[0] != SEED_KEY]
        command = [
            sys.executable,
            str(TRAIN_SCRIPT),
            "-m",
            *overrides,
            f"{SEED_KEY}={','.join(map(str, seeds))}",
            f"hydra.sweep.dir={Path(sweep_dir) / 'decide'}",
            *sweep.launcher_overrides,
        ]
        if sweep.parent_run_id:
            command += [
                f"logger.experiment_id={sweep.experiment_id}",
                f"logger.parent_run_id={sweep.parent_run_id}",
                f"logger.sweep_id={sweep.sweep_id}",
                f"+logger.tags.decide_round={number}",
            ]
        print(f"round {number}: {name}: seeds {', '.join(map(str, seeds))}", flush=True)
        subprocess.run(command, check=False)


def design_overrides(sweep: Sweep, frame: pd.DataFrame, metric: str) -> dict[str, list[str]]:
    """Each design's launch overrides, from one of its runs in the sweep's record (designs labelled
    as the verdicts label them)."""
    runs = labelled_runs(frame, metric)
    by_dir = dict(zip(runs["run_dir"].astype(str), runs["design"]))
    overrides: dict[str, list[str]] = {}
    for job in sweep.jobs:
        label = by_dir.get(str(Path(job.run_dir).resolve()))
        if label is not None:
            overrides.setdefault(label, job.overrides)
    return overrides


def format_round(state: Round, plan: DecidePlan, heading: str) -> str:
    """The verdict table with repeated confidence intervals, the seeds per design and the spend."""
    lines = [heading, f"  {plan.design.describe(len(state.table))}, alpha {plan.alpha}, metric {plan.metric}"]
    for _, row in state.table.iterrows():
        lines.append(
            f"  {row['design_a']}  vs  {row['design_b']}: {row['verdict']}; A-B {row['mean_difference']:+.4g} "
            f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}] at {row['seeds']} seeds, |z| {abs(row['z']):.3g} "
            f"against {row['boundary']:.3g}"
        )
    seeds = ", ".join(f"{name}: {len(values)}" for name, values in sorted(state.values.items()))
    lines.append(f"  seeds per design: {seeds}; spent {state.spent:.3g} device-hours")
    return "\n".join(lines)


def format_dry_run(state: Round, plan: DecidePlan, effect: float | None, added: dict[str, list[int]]) -> str:
    """Per undecided pair: the spread so far, the seeds it needs for ``effect``, and the next round's cost."""
    lines = ["dry run: nothing launched"]
    level = plan.alpha / max(1, int((~state.table["decided"]).sum()))
    for _, row in state.table[~state.table["decided"]].iterrows():
        a, b = state.values[row["design_a"]], state.values[row["design_b"]]
        shared = sorted(set(a) & set(b))
        spread = float(np.std([a[s] - b[s] for s in shared], ddof=1)) if len(shared) > 1 else float("nan")
        target = effect if effect is not None else row["mean_difference"]
        needed = seeds_needed(spread, target, plan.design, level)
        lines.append(
            f"  {row['design_a']} vs {row['design_b']}: sd of A-B {spread:.3g}; for an effect of {target:.3g}: "
            + (f"about {needed} seeds" if needed else "cannot tell (no spread or no effect)")
            + f" (cap {plan.looks[-1]})"
        )
    runs = sum(len(s) for s in added.values())
    lines.append(
        f"  next round: {runs} run(s) ({'; '.join(f'{k}: seeds {v}' for k, v in added.items())}), "
        f"about {runs * state.cost_per_run:.3g} device-hours at the sweep's measured cost per run"
    )
    return "\n".join(lines)


def decide(
    sweep_dir: Path,
    metric: str,
    higher_is_better: bool,
    max_seeds: int,
    alpha: float,
    budget: float | None = None,
    dry_run: bool = False,
    effect: float | None = None,
) -> int:
    """Rounds of seeds until every pair is decided, the cap, or the budget (see the module docstring)."""
    sweep = Sweep.load(sweep_dir)
    if sweep is None:
        raise DecideError(f"{sweep_dir} holds no sweep.json")
    frame = load_sweep(str(sweep_dir))
    first = min(len(v) for v in design_values(frame, metric).values())
    plan = fixed_plan(sweep_dir, metric, higher_is_better, first, max_seeds, alpha)
    labels = design_overrides(sweep, frame, metric)
    launched: dict[str, list[int]] | None = None
    while True:
        state = read_round(frame, plan)
        added = seeds_to_add(state)
        if launched is not None and added == launched:
            raise DecideError(
                f"round {plan.rounds[-1]['round']}'s runs did not finish (see `codec-sweep status {sweep_dir}`); "
                "fix them and run decide again: it resumes this round"
            )
        print(format_round(state, plan, f"after round {len(plan.rounds)}:"), flush=True)
        if not state.targets:
            print("every comparison is decided, or undecided at the seed cap: nothing to add")
            return 0
        if dry_run:
            print(format_dry_run(state, plan, effect, added))
            return 0
        cost = sum(len(s) for s in added.values()) * state.cost_per_run
        plan.stopped_by_budget = budget is not None and state.spent + cost > budget
        plan.save(sweep_dir)
        if plan.stopped_by_budget:
            print(format_round(read_round(frame, plan, out_of_budget=True), plan, "stopped by the budget:"))
            print(f"the next round ({cost:.3g} device-hours) would pass --budget {budget} (spent {state.spent:.3g})")
            return 0
        unknown = sorted(set(added) - set(labels))
        if unknown:
            raise DecideError(f"no launch overrides recorded for design(s) {unknown} in {sweep_dir / 'sweep.json'}")
        number = plan.start_round(added, sweep_dir)
        launch_round(sweep, sweep_dir, labels, added, number)
        launched = added
        frame = load_sweep(str(sweep_dir))
