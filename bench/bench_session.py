"""Benchmark 2: one learning session through Dagster against the same domain calls in a loop.

Both sides start from the same state (a new home: empty registry, a SQLite journal seeded with
a day of demo trades) and learn the same partition with default window and CatBoost sizes.
With no production model every model is trained (initial training); the gates are permissive so
every candidate is also promoted and the whole chain runs. The Dagster instance keeps its runs and
events in SQLite files; the same job on an in-memory instance shows what that storage costs. All
sides must deploy the very same model versions (the version id carries the model's sha256).

Also: a full session of 9 models (3 symbols x 3 timeframes) through Dagster at default settings,
in a fresh process whose RSS high-water mark (``resource.getrusage``) is the session's peak
memory.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
from _common import (
    BENCH,
    arguments,
    header,
    median,
    row,
    run_python,
    write_results,
)

from session_learning.definitions import build_definitions
from session_learning.domain.analysis import LearningRules, RetrainPlan, analyze_session
from session_learning.domain.demo import simulate_trades
from session_learning.domain.fitting import evaluate_production, train_candidate
from session_learning.domain.gates import judge
from session_learning.domain.keys import DEFAULT_MODELS, ModelKey
from session_learning.domain.sessions import history_start
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.trades import valid_trades, validate_trades
from session_learning.domain.training import build_training_set, effective_plan
from session_learning.jobs import LEARNING_JOB
from session_learning.resources.journal import TradeJournal
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.registry import ModelRegistry
from session_learning.settings import Settings

PARTITION = "2025-03-04-12:00"
START = pd.Timestamp("2025-03-04 12:00", tz="UTC")
END = START + pd.Timedelta(hours=4)
SEED = 7  # the synthetic market data's default seed

# Three of the six default models: one per symbol, both timeframes.
COMPARED_MODELS = (DEFAULT_MODELS[0], DEFAULT_MODELS[3], DEFAULT_MODELS[4])
NINE_MODELS = tuple(
    ModelKey(symbol, timeframe)
    for symbol in ("EURUSD", "GBPUSD", "XAUUSD")
    for timeframe in ("5T", "15T", "30T")
)
# Default sizes (6,000 training rows, 250 iterations); gates that every candidate passes.
PERMISSIVE = LearningSettingsResource(
    min_profit_factor=0.0,
    max_drawdown_pct=100.0,
    min_win_rate=0.0,
    min_trades={"5T": 1, "15T": 1, "30T": 1, "1H": 1, "4H": 1},
)


# Events still go to the SQLite event log; the console shows warnings and errors only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def new_home(root: Path, models: tuple[ModelKey, ...]) -> Settings:
    """A home whose journal holds a day of demo trades up to the session's end."""
    home = Path(tempfile.mkdtemp(dir=root))
    settings = Settings(home=home, models=models, synthetic_seed=SEED)
    journal = TradeJournal(settings.default_journal_url)
    journal.create_schema()
    frames = []
    for key in models:
        bars = generate_bars(key.symbol, key.timeframe, START - pd.Timedelta(days=3), END, SEED)
        costs = PERMISSIVE.costs(key.symbol)
        frames.append(simulate_trades(bars, key, END - pd.Timedelta(days=1), END, costs, seed=1))
    journal.add_trades(pd.concat(frames, ignore_index=True))
    return settings


def through_dagster(
    settings: Settings,
    learning: LearningSettingsResource = PERMISSIVE,
    storage: str = "sqlite",
) -> tuple[float, float, dg.ExecuteInProcessResult]:
    """The learning job for one partition, in-process, on a Dagster instance whose run and event
    storage is SQLite files (``storage="sqlite"``) or memory (``"memory"``).

    Returns the wall and CPU time of ``execute_in_process`` alone: building the definitions and
    creating the instance happen once per deployment, not per session. A run whose blocking gate
    failed is not successful, yet a normal session: callers decide.
    """
    defs = build_definitions(settings, resource_overrides={"learning_settings": learning})
    job = defs.resolve_job_def(LEARNING_JOB)
    if storage == "sqlite":
        instance_dir = settings.home / "dagster"
        instance_dir.mkdir()
        telemetry_off = {"telemetry": {"enabled": False}}
        instance = dg.DagsterInstance.local_temp(str(instance_dir), overrides=telemetry_off)
    else:
        instance = dg.DagsterInstance.ephemeral()
    with instance:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = job.execute_in_process(
            partition_key=PARTITION,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return elapsed, cpu, result


def plain_loop(settings: Settings, learning: LearningSettingsResource = PERMISSIVE) -> None:
    """The same session as plain function calls: what the assets do, without Dagster."""
    models = settings.models
    journal = TradeJournal(settings.default_journal_url)
    registry = ModelRegistry(settings.models_dir)
    config = learning.learning_config()
    thresholds = learning.gate_thresholds()

    trades = valid_trades(validate_trades(journal.trades_exited_between(START, END), models))
    report = analyze_session(trades, models, START, END, LearningRules.preset("balanced"))
    for key in models:
        plan = report.plans.get(key.slug) or RetrainPlan(model=key.slug, retrain=False)
        plan = effective_plan(plan, registry.production_version(key) is not None)
        if plan is None:
            continue
        bars = generate_bars(
            key.symbol,
            key.timeframe,
            history_start(key, END, config.history_bars(key.timeframe)),
            END,
            SEED,
        )
        frame, info = build_training_set(bars, key, START, END, trades, plan, config)
        info["plan"] = plan.to_dict()
        costs = learning.costs(key.symbol)
        candidate = train_candidate(frame, info, config, costs, key.bar)
        live = registry.production_version(key)
        version = registry.save_candidate(
            key, candidate.model, candidate.card(info, PARTITION, live), END
        )
        production = registry.load(key, live) if live is not None else None
        production_result = evaluate_production(production, frame, costs, key.bar)
        judgement = judge(
            candidate.result,
            production_result,
            key.timeframe,
            candidate.window,
            thresholds,
            baseline_version=live,
            partition=PARTITION,
            judged_at=pd.Timestamp.now(tz="UTC").isoformat(),
        )
        registry.record_judgement(key, version, judgement.to_record())
        if judgement.passed:
            registry.promote(key, version, reason="passed every gate", session=PARTITION)


def deployed(settings: Settings) -> dict[str, str | None]:
    registry = ModelRegistry(settings.models_dir)
    return {key.slug: registry.production_version(key) for key in settings.models}


def saved_candidates(settings: Settings) -> int:
    registry = ModelRegistry(settings.models_dir)
    return sum(len(registry.versions(key)) for key in settings.models)


SIDES = ("dagster", "plain", "dagster_in_memory")


def compare_with_dagster(root: Path, repeats: int) -> dict:
    timings: dict[str, list[float]] = {name: [] for name in SIDES}
    cpu: dict[str, list[float]] = {name: [] for name in SIDES}
    homes: dict[str, list[Settings]] = {name: [] for name in SIDES}

    def run(name: str, models: tuple[ModelKey, ...] = COMPARED_MODELS) -> tuple[float, float]:
        settings = new_home(root, models)  # seeding the journal is not timed
        homes[name].append(settings)
        if name != "plain":
            storage = "memory" if name == "dagster_in_memory" else "sqlite"
            elapsed, cpu_time, result = through_dagster(settings, storage=storage)
            if not result.success:
                raise RuntimeError("the learning job failed with permissive gates")
            return elapsed, cpu_time
        start, start_cpu = time.perf_counter(), time.process_time()
        plain_loop(settings)
        return time.perf_counter() - start, time.process_time() - start_cpu

    # One model each first: imports, CatBoost and the bar cache warm up on every side alike.
    for name in SIDES:
        run(name, COMPARED_MODELS[:1])
        homes[name].clear()
    for round_ in range(repeats):  # taking turns, so every side sees the same background load
        for name in SIDES if round_ % 2 == 0 else reversed(SIDES):
            elapsed, cpu_time = run(name)
            timings[name].append(elapsed)
            cpu[name].append(cpu_time)
    versions = {name: {json.dumps(deployed(s)) for s in homes[name]} for name in SIDES}
    if len({frozenset(v) for v in versions.values()}) != 1 or len(versions["plain"]) != 1:
        raise AssertionError(f"the sides deployed different models: {versions}")
    return {
        "models": [k.slug for k in COMPARED_MODELS],
        "deployed": json.loads(versions["plain"].pop()),
        "wall_s": timings,
        "cpu_s": cpu,
        "ratio": median(timings["dagster"]) / median(timings["plain"]),
        "ratio_cpu": median(cpu["dagster"]) / median(cpu["plain"]),
        "ratio_in_memory": median(timings["dagster_in_memory"]) / median(timings["plain"]),
        "ratio_in_memory_cpu": median(cpu["dagster_in_memory"]) / median(cpu["plain"]),
    }


NINE_CHILD = """
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bench_session as b
from session_learning.resources.learning_settings import LearningSettingsResource
with tempfile.TemporaryDirectory() as root:
    settings = b.new_home(Path(root), b.NINE_MODELS)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elapsed, cpu, result = b.through_dagster(settings, LearningSettingsResource())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "session_s": elapsed,
        "session_cpu_s": cpu,
        "peak_rss_kib": peak,
        "rss_before_kib": before,
        "candidates": b.saved_candidates(settings),
        "failed_steps": [e.step_key for e in result.all_events if e.is_step_failure],
        "deployed": b.deployed(settings),
    }))
"""


def nine_models() -> dict:
    wall, out = run_python(NINE_CHILD, str(BENCH))
    return {"process_wall_s": wall, **json.loads(out)}


def main() -> int:
    args = arguments(__doc__.splitlines()[0])
    header(f"one session ({PARTITION}): Dagster job vs plain loop; 9-model session")
    root = Path(tempfile.mkdtemp(prefix="session_learning_bench_"))
    try:
        cmp = compare_with_dagster(root, repeats=1 if args.quick else 3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"-- {len(cmp['models'])} models ({', '.join(cmp['models'])}), default sizes, "
        f"all trained and promoted, same versions deployed by both"
    )
    wall, cpu = cmp["wall_s"], cmp["cpu_s"]
    print(row("Dagster job, SQLite instance", wall["dagster"], cpu["dagster"]))
    print(row("plain Python loop", wall["plain"], cpu["plain"]))
    print(
        row("Dagster job, in-memory instance", wall["dagster_in_memory"], cpu["dagster_in_memory"])
    )
    print(
        f"   => Dagster / plain = {cmp['ratio']:.3f}x by wall time, {cmp['ratio_cpu']:.3f}x by "
        "CPU time (target <= 1.15x)"
    )
    print(
        f"      with the in-memory instance: {cmp['ratio_in_memory']:.3f}x by wall time, "
        f"{cmp['ratio_in_memory_cpu']:.3f}x by CPU time (what the SQLite event log costs)"
    )

    nine = nine_models()
    deployed_count = sum(v is not None for v in nine["deployed"].values())
    print(
        f"-- 9 models ({', '.join(k.slug for k in NINE_MODELS)}), default settings and gates, "
        f"through Dagster in a fresh process"
    )
    print(
        f"   session {nine['session_s']:.1f} s, CPU {nine['session_cpu_s']:.1f} s (target <= 60 s); "
        f"{nine['candidates']} candidates, {deployed_count} deployed; "
        f"process wall {nine['process_wall_s']:.1f} s"
    )
    if nine["failed_steps"]:
        print(f"   steps stopped by a failed blocking gate: {', '.join(nine['failed_steps'])}")
    print(
        f"   peak RSS {nine['peak_rss_kib'] / 1024:.0f} MiB (target <= 1024 MiB); "
        f"{nine['rss_before_kib'] / 1024:.0f} MiB before the run (imports, seeding)"
    )
    write_results(args.json, {"dagster_vs_plain": cmp, "nine_models": nine})
    return 0


if __name__ == "__main__":
    sys.exit(main())
