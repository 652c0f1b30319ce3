"""Benchmark 3: the training wrapper (``train_model``) against a bare ``CatBoostClassifier.fit``.

Same training set (EURUSD 30T at the end of a session, default windows: 6,000 rows before the
validation window plus the session's rows), same parameters (``catboost_params`` of the default
plan: 250 iterations, depth 6, 2 threads), same rows, labels and weights. The bare fit gets its
inputs ready-made; the wrapper selects the training rows and checks the classes itself. Both
must produce the same model.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from _common import arguments, header, interleaved, median, row, write_results
from catboost import CatBoostClassifier

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.estimators import Estimator
from session_learning.domain.fitting import catboost_params, train_model
from session_learning.domain.keys import TRADE_COLUMNS, ModelKey
from session_learning.domain.sessions import history_start
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.trades import validate_trades
from session_learning.domain.training import CLASSES, LearningConfig, build_training_set

KEY = ModelKey("EURUSD", "30T")
END = pd.Timestamp("2025-03-04 16:00", tz="UTC")
START = END - pd.Timedelta(hours=4)


def training_set() -> tuple[pd.DataFrame, list[str], dict]:
    config = LearningConfig()
    plan = RetrainPlan(model=KEY.slug, retrain=True)
    bars = generate_bars(
        KEY.symbol, KEY.timeframe, history_start(KEY, END, config.history_bars(KEY.timeframe)), END
    )
    no_trades = validate_trades(pd.DataFrame(columns=list(TRADE_COLUMNS)))
    frame, info = build_training_set(bars, KEY, START, END, no_trades, plan, config)
    return frame, info["features"], catboost_params(plan, config)


def main() -> int:
    args = arguments(__doc__.splitlines()[0])
    header(f"train_model vs CatBoostClassifier.fit: {KEY} training set")
    frame, features, params = training_set()
    rows = frame.loc[frame["split"] == "train"]
    x, y, w = rows[features], rows["label"].astype(int), rows["weight"].to_numpy()

    def bare() -> CatBoostClassifier:
        return CatBoostClassifier(**params, class_names=list(CLASSES)).fit(x, y, sample_weight=w)

    def wrapper() -> Estimator:
        return train_model(frame, features, params)

    same = np.array_equal(bare().predict_proba(x), wrapper().predict_proba(x))
    if not same:
        raise AssertionError("the wrapper and the bare fit trained different models")
    times, cpu = interleaved(
        {"train_model": wrapper, "bare_fit": bare}, repeats=3 if args.quick else 5, warmup=0
    )
    ratio = median(times["train_model"]) / median(times["bare_fit"])
    cpu_ratio = median(cpu["train_model"]) / median(cpu["bare_fit"])
    print(
        f"-- {len(x):,} training rows x {len(features)} features; "
        f"{params['iterations']} iterations, depth {params['depth']}, "
        f"{params['thread_count']} threads; identical predictions"
    )
    print(row("train_model", times["train_model"], cpu["train_model"], width=24))
    print(row("CatBoostClassifier.fit", times["bare_fit"], cpu["bare_fit"], width=24))
    print(
        f"   => train_model / fit = {ratio:.3f}x by wall time, {cpu_ratio:.3f}x by CPU time "
        "(target <= 1.10x)"
    )
    write_results(
        args.json,
        {
            "rows": len(x),
            "features": len(features),
            "params": params,
            "wall_s": times,
            "cpu_s": cpu,
            "ratio": ratio,
            "ratio_cpu": cpu_ratio,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
