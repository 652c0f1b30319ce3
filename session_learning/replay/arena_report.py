"""What the arena arm's log says: per flip, how fast the champion stopped and a better model
came; over a run, promotions and pauses per model-year. Pure functions over the log
(``arena_arm.ARENA_LOG_COLUMNS``); ``reports/replay_summary.py`` and ``reports/replay_markdown.py``
render them (this module never imports the report).

Definitions (stated in the report):

- a *flip* is a change of the synthetic structure (trend <-> range; ``flip_blocks`` in the
  report); its block runs to the next flip. Sessions are counted among the model's sessions with
  bars, the flip's own session being 1;
- the *champion at the flip* is the version that traded the flip's session (FLAT: nothing to
  stop). The flip is *adverse* when that version's shadow marks over the block (while it stayed
  in the arena) sum below 0 R: the flip made it lose;
- *sessions until it stopped trading*: the session at whose end it was no longer champion
  (paused by the change detector, or replaced); it traded that many sessions after the flip;
- *sessions until a better model was promoted*: the session at whose end another version was
  promoted (on forward evidence and gates); "better" is what the evidence claimed;
- censored: neither happened before the next flip (counted as the block's length plus one for
  the median, and reported);
- *per model-year*: per 1,560 sessions with bars of one model (6 four-hour sessions a day,
  260 trading days).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from session_learning.domain.arena import FLAT

SESSIONS_PER_MODEL_YEAR = 6 * 260
_EVENTS = ("promoted", "demoted", "retired", "evicted", "admitted", "refused")


def arena_counts(log: pd.DataFrame, budget_per_100_sessions: float) -> dict:
    """Promotions, pauses and the rest, per model and per model-year."""
    sessions = log.loc[log["event"] == "session"]
    model_years = len(sessions) / SESSIONS_PER_MODEL_YEAR
    promoted = log.loc[log["event"] == "promoted"]
    over_version = promoted.loc[~promoted["detail"].astype(str).str.startswith(f"over {FLAT},")]
    champion_sessions = int((sessions["version"] != FLAT).sum())
    demotions = int((log["event"] == "demoted").sum())
    counts = {event: int((log["event"] == event).sum()) for event in _EVENTS}
    return {
        "sessions": int(len(sessions)),
        "model_years": model_years,
        "counts": counts,
        "promotions_over_flat": int(len(promoted) - len(over_version)),
        "promotions_over_a_version": int(len(over_version)),
        "promotions_per_model_year": _rate(len(promoted), model_years),
        "pauses_per_model_year": _rate(demotions, model_years),
        "champion_sessions": champion_sessions,
        "pauses_per_100_champion_sessions": _rate(demotions, champion_sessions / 100),
        "pause_budget_per_100_sessions": budget_per_100_sessions,
        "flat_share": float((sessions["version"] == FLAT).mean()) if len(sessions) else None,
    }


def per_flip(log: pd.DataFrame, blocks: pd.DataFrame, symbol_of: dict[str, str]) -> list[dict]:
    """One row per (model, flip): the champion at the flip, whether the flip was adverse, the
    sessions until it stopped trading and until another version was promoted."""
    rows = []
    blocks = blocks.loc[blocks["flip"].notna()]
    sessions = log.loc[log["event"] == "session"]
    for model, mine in sessions.groupby("model", sort=True):
        symbol = symbol_of[model]
        events = log.loc[log["model"] == model]
        for flip, block in blocks.loc[blocks["symbol"] == symbol].groupby("flip", sort=True):
            inside = mine.loc[mine["session"].isin(set(block["session"]))]
            if inside.empty:
                continue
            inside = inside.sort_values("session")
            champion = str(inside["version"].iloc[0])
            row = {
                "model": model,
                "flip": pd.Timestamp(flip).isoformat(),
                "to": str(block["structure"].iloc[0]),
                "sessions": int(len(inside)),
                "champion": champion,
                "adverse": False,
                "champion_r": None,
                "stopped_after": None,
                "stopped_by": None,
                "promoted_after": None,
                "promoted": None,
            }
            if champion != FLAT:
                marks = events.loc[
                    (events["event"] == "marks")
                    & (events["version"] == champion)
                    & events["session"].isin(set(inside["session"]))
                ]
                total = float(marks["marks_r"].sum())
                row.update(champion_r=total, adverse=total < 0)
                changed = np.flatnonzero(inside["champion"].astype(str).to_numpy() != champion)
                if len(changed):
                    at = inside["session"].iloc[changed[0]]
                    row["stopped_after"] = int(changed[0]) + 1
                    paused = events.loc[(events["event"] == "demoted") & (events["session"] == at)]
                    row["stopped_by"] = "paused" if len(paused) else "replaced"
            promoted = events.loc[
                (events["event"] == "promoted")
                & events["session"].isin(set(inside["session"]))
                & (events["version"] != champion)
            ].sort_values("session")
            if len(promoted):
                first = promoted["session"].iloc[0]
                row["promoted_after"] = int(np.flatnonzero(inside["session"] == first)[0]) + 1
                row["promoted"] = str(promoted["version"].iloc[0])
            rows.append(row)
    return rows


def flip_medians(flips: list[dict]) -> dict:
    """Medians over the adverse flips, censored values counted past their block."""
    adverse = [f for f in flips if f["adverse"]]

    def median(field: str) -> tuple[float | None, int]:
        values = [
            f[field] if f[field] is not None else f["sessions"] + 1 for f in adverse
        ]  # censored: past the block
        censored = sum(1 for f in adverse if f[field] is None)
        return (float(np.median(values)) if values else None), censored

    stop, stop_censored = median("stopped_after")
    promoted, promoted_censored = median("promoted_after")
    return {
        "flips": len(flips),
        "adverse": len(adverse),
        "median_sessions_to_stop": stop,
        "stopped_within_3": sum(1 for f in adverse if (f["stopped_after"] or math.inf) <= 3),
        "stop_censored": stop_censored,
        "median_sessions_to_promotion": promoted,
        "promoted_within_8": sum(1 for f in adverse if (f["promoted_after"] or math.inf) <= 8),
        "promotion_censored": promoted_censored,
    }


def adverse_sessions(flips: list[dict], blocks: pd.DataFrame, symbol_of: dict) -> pd.DataFrame:
    """The (symbol, session) pairs of the adverse flips' blocks, for the arms' trades."""
    rows = []
    for f in flips:
        if not f["adverse"]:
            continue
        symbol = symbol_of[f["model"]]
        mask = (blocks["symbol"] == symbol) & (
            pd.to_datetime(blocks["flip"], utc=True) == pd.Timestamp(f["flip"])
        )
        rows += [{"symbol": symbol, "entry_session": s} for s in blocks.loc[mask, "session"]]
    return pd.DataFrame(rows, columns=["symbol", "entry_session"])


def _rate(count: float, per: float) -> float | None:
    return float(count / per) if per > 0 else None
