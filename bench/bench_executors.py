"""Benchmark: one session of 27 models (9 symbols x 3 timeframes, synthetic bars) run three
ways — Dagster's in-process executor, its multiprocess executor, and the Celery executor on two
``dagster-celery`` workers behind Redis — and the replay's speed-up from one to two workers.

    python bench/bench_executors.py            # needs Redis: ./scripts/test starts one (port 6390)
    python bench/bench_executors.py --quick    # 9 models instead of 27

Each way starts from a new home (empty registry, the same SQLite journal of demo trades) and a
Dagster instance on SQLite files, and learns the same partition; the gates are permissive so
every model's whole chain runs (training set, candidate, deployment), and all three must deploy
the very same versions. Wall time is the run's; CPU time is every process's that worked for it
(the run's process, the step processes it started, the Celery workers' processes) from
/proc and getrusage. CatBoost trains on one thread everywhere, so the executors are the
parallelism. Redis: SESSION_LEARNING_TEST_REDIS_URL, or 127.0.0.1:SESSION_LEARNING_REDIS_PORT
(default 6390).
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
from _common import BENCH, REPO, arguments, header, write_results

from session_learning.definitions import build_definitions
from session_learning.domain.demo import simulate_trades
from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.training import LearningConfig
from session_learning.executors import CELERY_CONFIG_VAR, EXECUTOR_VAR, build_executor
from session_learning.jobs import LEARNING_JOB
from session_learning.replay import ReplayConfig, SyntheticBars, run_replay
from session_learning.resources.journal import TradeJournal
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.registry import ModelRegistry
from session_learning.settings import Settings

PARTITION = "2025-03-04-12:00"
END = pd.Timestamp("2025-03-04 16:00", tz="UTC")
SEED = 7
SYMBOLS = ("EURUSD", "GBPUSD", "XAUUSD", "USDJPY", "AUDUSD", "USDCHF", "XAGUSD", "USDCAD", "NZDUSD")
TIMEFRAMES = ("5T", "15T", "30T")
# The three profiled symbols keep their costs; the others have the generic profile (price 100).
SPREADS = {"EURUSD": 0.00008, "GBPUSD": 0.00012, "XAUUSD": 0.25}
# Smaller than the defaults (6,000 rows, 250 iterations) so that three runs of 27 models fit in
# a few minutes; one CatBoost thread, so that the executor decides how many cores work.
LEARNING = dict(training_bars=2000, iterations=100, thread_count=1)
PERMISSIVE_GATES = dict(
    min_profit_factor=0.0,
    max_drawdown_pct=100.0,
    min_win_rate=0.0,
    min_trades={"5T": 1, "15T": 1, "30T": 1},
)
WAYS = ("in_process", "multiprocess", "celery")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def models(quick: bool) -> tuple[ModelKey, ...]:
    symbols = SYMBOLS[:3] if quick else SYMBOLS
    return tuple(ModelKey(s, t) for s in symbols for t in TIMEFRAMES)


def learning_settings() -> LearningSettingsResource:
    spreads = {s: SPREADS.get(s, 0.01) for s in SYMBOLS}
    return LearningSettingsResource(**LEARNING, **PERMISSIVE_GATES, spreads=spreads)


def learning_job(home: str, model_list: str, way: str, celery_config: str) -> dg.JobDefinition:
    """The learning job of ``home``, run by ``way``; rebuilt in every step process and worker."""
    settings = Settings(
        home=Path(home), models=tuple(ModelKey.parse(m) for m in model_list.split(","))
    )
    executor = build_executor({EXECUTOR_VAR: way, CELERY_CONFIG_VAR: celery_config})
    defs = build_definitions(
        settings, resource_overrides={"learning_settings": learning_settings()}, executor=executor
    )
    return defs.resolve_job_def(LEARNING_JOB)


def new_home(root: Path, keys: tuple[ModelKey, ...]) -> Path:
    """A home whose SQLite journal holds a day of demo trades up to the session's end."""
    home = Path(tempfile.mkdtemp(dir=root))
    journal = TradeJournal(f"sqlite:///{home / 'journal.sqlite'}")
    journal.create_schema()
    frames = []
    costs = learning_settings()
    for key in keys:
        bars = generate_bars(key.symbol, key.timeframe, END - pd.Timedelta(days=3), END, SEED)
        frames.append(
            simulate_trades(
                bars, key, END - pd.Timedelta(days=1), END, costs.costs(key.symbol), seed=1
            )
        )
    journal.add_trades(pd.concat(frames, ignore_index=True))
    journal.engine.dispose()
    return home


# --- CPU accounting ---------------------------------------------------------------------------


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime of the process itself


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int(
                    Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def workers_cpu(leaders: list[int]) -> float:
    """CPU seconds the Celery workers' processes have used so far."""
    hz = os.sysconf("SC_CLK_TCK")
    return sum(_ticks(pid) for leader in leaders for pid in [leader, *_tree(leader)]) / hz


def own_cpu() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# --- Celery workers ---------------------------------------------------------------------------


class CeleryWorkers:
    def __init__(self, root: Path, redis_url: str, count: int) -> None:
        self.root, self.count = root, count
        prefix = f"sl-bench-{secrets.token_hex(4)}:"
        self.config = root / "celery.yaml"
        self.config.write_text(
            "execution:\n  config:\n"
            f"    broker: {redis_url}/0\n    backend: {redis_url}/1\n"
            "    config_source:\n"
            f"      broker_transport_options: {{global_keyprefix: '{prefix}'}}\n"
            f"      result_backend_transport_options: {{global_keyprefix: '{prefix}'}}\n"
        )
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        # `worker start` opens an instance once (for its config folder); each step then uses
        # the instance of its run.
        home = self.root / "worker_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)]),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        for n in range(self.count):
            log = (self.root / f"worker{n + 1}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "dagster-celery"),
                        *("worker", "start", "-A", "dagster_celery.app", "-y", str(self.config)),
                        *("-n", f"bench{n + 1}", "--", "--concurrency=1"),
                        *("--without-mingle", "--without-gossip"),
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        logs = [self.root / f"worker{n + 1}.log" for n in range(self.count)]
        while not all(" ready." in p.read_text(errors="replace") for p in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"Celery workers did not start; see {self.root}")
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def redis_url() -> str:
    url = os.environ.get("SESSION_LEARNING_TEST_REDIS_URL")
    return (
        url or f"redis://127.0.0.1:{os.environ.get('SESSION_LEARNING_REDIS_PORT', '6390')}"
    ).rstrip("/")


# --- the session, three ways ------------------------------------------------------------------


def run_session(root: Path, way: str, keys, workers: CeleryWorkers | None) -> dict:
    home = new_home(root, keys)
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    job = dg.build_reconstructable_job(
        "bench_executors",
        "learning_job",
        reconstructable_args=(
            str(home),
            ",".join(k.slug for k in keys),
            way,
            str(workers.config if workers else ""),
        ),
        reconstructor_working_directory=str(BENCH),
    )
    os.environ["DAGSTER_HOME"] = str(dagster_home)  # the Celery workers get it from the run
    leaders = [p.pid for p in workers.processes] if workers else []
    with dg.DagsterInstance.get() as instance:
        cpu0, workers0 = own_cpu(), workers_cpu(leaders)
        start = time.perf_counter()
        result = dg.execute_job(
            job,
            instance=instance,
            tags={"dagster/partition": PARTITION},
            run_config=QUIET,
            raise_on_error=False,
        )
        wall = time.perf_counter() - start
        cpu = own_cpu() - cpu0 + workers_cpu(leaders) - workers0
    if not result.success:
        raise RuntimeError(f"the {way} run failed: {result.run_id} in {dagster_home}")
    registry = ModelRegistry(home / "models")
    deployed = {k.slug: registry.production_version(k) for k in keys}
    if not all(deployed.values()):
        raise RuntimeError(f"the {way} run did not deploy every model: {deployed}")
    return {"wall_s": wall, "cpu_s": cpu, "deployed": deployed}


# --- the replay, one worker and two -----------------------------------------------------------


def replay_speedup(root: Path, quick: bool) -> dict:
    config = ReplayConfig(
        models=(ModelKey("EURUSD", "30T"), ModelKey("GBPUSD", "30T"), ModelKey("XAUUSD", "30T")),
        start="2025-03-03T00:00Z",
        end="2025-03-05T00:00Z" if quick else "2025-03-08T00:00Z",
        learning=LearningConfig(training_bars=1500, validation_bars={"30T": 600}, iterations=60),
    )
    times = {}
    for workers in (1, 2):
        os.environ.pop(EXECUTOR_VAR, None)
        start = time.perf_counter()
        run_replay(
            replace(config, workers=workers),
            SyntheticBars(SEED),
            root / f"replay{workers}",
            progress=False,
        )
        times[workers] = time.perf_counter() - start
    return {
        "sessions": len(config.sessions()),
        "models": len(config.models),
        "arms": len(config.arms),
        "one_worker_s": times[1],
        "two_workers_s": times[2],
        "speedup": times[1] / times[2],
    }


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0])
    keys = models(args.quick)
    # Step processes and workers import this module to rebuild the job.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH), str(REPO), os.environ.get("PYTHONPATH")])
    )
    header(
        f"executors: one session of {len(keys)} models three ways; the replay on 1 and 2 workers"
    )
    root = Path(tempfile.mkdtemp(prefix="sl-bench-executors-"))
    results: dict = {"models": len(keys), "partition": PARTITION, "learning": LEARNING}
    workers = CeleryWorkers(root, redis_url(), 2)
    try:
        workers.start()
        sessions = {}
        for way in WAYS:
            sessions[way] = run_session(root, way, keys, workers if way == "celery" else None)
            s = sessions[way]
            print(f"   {way:<13} wall {s['wall_s']:7.1f} s   CPU {s['cpu_s']:7.1f} s")
        workers.stop()
        versions = {way: s["deployed"] for way, s in sessions.items()}
        same = versions["in_process"] == versions["multiprocess"] == versions["celery"]
        base = sessions["in_process"]
        for way in WAYS[1:]:
            s = sessions[way]
            print(
                f"   {way} / in_process: wall {s['wall_s'] / base['wall_s']:.2f}x, "
                f"CPU {s['cpu_s'] / base['cpu_s']:.2f}x"
            )
        print(f"   the same {len(keys)} versions deployed by all three: {'yes' if same else 'NO'}")
        results["sessions"] = {
            w: {k: v for k, v in s.items() if k != "deployed"} for w, s in sessions.items()
        }
        results["same_deployments"] = same
        replay = replay_speedup(root, args.quick)
        print(
            f"   replay ({replay['models']} models x {replay['arms']} arms, {replay['sessions']} "
            f"sessions): 1 worker {replay['one_worker_s']:.1f} s, 2 workers "
            f"{replay['two_workers_s']:.1f} s: speed-up {replay['speedup']:.2f}x"
        )
        results["replay"] = replay
    finally:
        workers.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_results(args.json, results)
    if not results.get("same_deployments"):
        sys.exit(1)


if __name__ == "__main__":
    main()
