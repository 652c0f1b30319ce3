"""The shadow book agrees with the backtest and marks every bar without look-ahead."""

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.backtest import BacktestConfig, CostModel, run_backtest
from session_learning.domain.evidence import barrier_span_r, difference_bound_r
from session_learning.domain.shadow import flat_marks, pair_marks, shadow_book
from tests.builders import ohlc_frame, random_ohlc
from tests.domain.test_backtest import reference_backtest

CONFIG = BacktestConfig(tp_atr=2.0, sl_atr=1.0, max_holding_bars=6)
COSTS = CostModel(spread=0.25, commission_rate=0.0005)


def random_case(seed, n=400):
    rng = np.random.default_rng(seed)
    bars = ohlc_frame(random_ohlc(seed, n))
    signals = rng.choice([-1, 0, 1], size=n, p=[0.15, 0.7, 0.15])
    atr = rng.integers(1, 10, n) * 0.25
    atr[rng.random(n) < 0.05] = np.nan
    return bars, signals, atr


@pytest.mark.parametrize("seed", range(12))
def test_trades_are_the_backtests_and_marks_add_up_to_their_r(seed):
    bars, signals, atr = random_case(seed)
    book = shadow_book(bars, signals, atr, CONFIG, COSTS)
    expected = reference_backtest(bars, signals, atr, CONFIG, COSTS)
    pd.testing.assert_frame_equal(
        book.trades, expected, check_dtype=False, check_exact=False, rtol=1e-12
    )
    assert len(expected) > 10
    marks = book.marks.to_numpy()
    held = np.zeros(len(bars), dtype=bool)
    for trade in expected.itertuples():
        first, last = trade.signal_index + 1, trade.signal_index + trade.bars_held
        assert marks[first : last + 1].sum() == pytest.approx(trade.r_multiple, abs=1e-9)
        held[first : last + 1] = True
    position = book.open_position
    if position is not None:
        held[position.entry_idx :] = True
        risk = abs(position.entry_price - position.stop_loss)
        cost = COSTS.spread + COSTS.commission_rate * position.entry_price
        unrealized = position.direction * (bars["close"].iloc[-1] - position.entry_price) - cost
        assert marks[position.entry_idx :].sum() == pytest.approx(unrealized / risk, abs=1e-9)
    assert (marks[~held] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_a_mark_never_depends_on_later_bars(seed):
    bars, signals, atr = random_case(seed, n=300)
    full = shadow_book(bars, signals, atr, CONFIG, COSTS).marks
    for cut in (57, 150, 233):
        early = shadow_book(bars.iloc[:cut], signals[:cut], atr[:cut], CONFIG, COSTS).marks
        np.testing.assert_allclose(early.to_numpy(), full.to_numpy()[:cut], atol=1e-12)


QUIET = (100.0, 100.5, 99.5, 100.0)


def test_hand_worked_marks_of_a_winner_and_an_open_short():
    rows = [
        QUIET,
        (100.0, 100.8, 99.6, 100.5),  # long entered at 100.0: +0.5 R at the close
        (100.5, 101.5, 100.2, 101.0),  # +0.5 R
        (101.0, 102.5, 100.8, 102.2),  # take profit at 102: +1.0 R
        QUIET,  # the short's signal bar
        (100.0, 100.4, 99.4, 99.5),  # short entered at 100.0: +0.5 R
        (99.5, 100.2, 99.3, 100.0),  # -0.5 R, still open
    ]
    bars = ohlc_frame(rows)
    signals = np.array([1, 0, 0, 0, -1, 0, 0])
    book = shadow_book(bars, signals, np.ones(7), CONFIG, CostModel())
    np.testing.assert_allclose(book.marks.to_numpy(), [0, 0.5, 0.5, 1.0, 0, 0.5, -0.5])
    assert book.trades["r_multiple"].tolist() == [2.0]
    assert book.open_position.direction == -1 and book.open_position.entry_idx == 5


def test_costs_are_charged_on_the_entry_and_exit_bars():
    rows = [QUIET, (100.0, 100.8, 99.6, 100.5), (100.5, 102.5, 100.2, 102.2), QUIET]
    bars = ohlc_frame(rows)
    costs = CostModel(spread=0.1, commission_rate=0.001)
    book = shadow_book(bars, np.array([1, 0, 0, 0]), np.ones(4), CONFIG, costs)
    entry_cost, exit_cost = 0.1 + 0.001 * 100.0, 0.001 * 102.0
    np.testing.assert_allclose(
        book.marks.to_numpy(), [0, 0.5 - entry_cost, 1.5 - exit_cost, 0], atol=1e-12
    )
    assert book.marks.sum() == pytest.approx(book.trades["r_multiple"].iloc[0])


def test_session_marks_pair_with_flat_and_with_another_member():
    bars, signals, atr = random_case(3, n=200)
    a = shadow_book(bars, signals, atr, CONFIG, COSTS)
    b = shadow_book(bars, -signals, atr, CONFIG, COSTS)
    start, end = bars.index[64], bars.index[80]
    marks_a, trades_a = a.session(start, end)
    marks_b, _ = b.session(start, end)
    assert len(marks_a) == 16
    exit_bars = bars.index[trades_a["signal_index"] + trades_a["bars_held"]]
    assert ((exit_bars >= start) & (exit_bars < end)).all()
    span = barrier_span_r(CONFIG.tp_atr, CONFIG.sl_atr)
    diff, clipped = pair_marks(marks_a, marks_b, difference_bound_r(span, span))
    np.testing.assert_allclose(diff, np.clip(marks_a - marks_b, -6, 6))
    vs_flat, _ = pair_marks(marks_a, None, difference_bound_r(span))
    np.testing.assert_allclose(vs_flat, np.clip(marks_a, -3, 3))
    assert (flat_marks(marks_a.index) == 0).all()
    with pytest.raises(ValueError, match="same session bars"):
        pair_marks(marks_a, marks_b.iloc[1:], 6.0)


def test_a_bar_mark_stays_within_the_barrier_span_without_gaps():
    # Random bars without gaps: every mark lies within the span (plus costs), so the evidence's
    # bound clips nothing.
    rng = np.random.default_rng(8)
    n = 2000
    close = 100 + np.cumsum(rng.normal(0, 0.3, n))
    open_ = np.r_[100, close[:-1]]
    high = np.maximum(open_, close) + rng.random(n) * 0.3
    low = np.minimum(open_, close) - rng.random(n) * 0.3
    bars = ohlc_frame(np.stack([open_, high, low, close], axis=1))
    signals = rng.choice([-1, 0, 1], size=n, p=[0.2, 0.6, 0.2])
    book = shadow_book(bars, signals, np.full(n, 0.4), CONFIG, CostModel())
    span = barrier_span_r(CONFIG.tp_atr, CONFIG.sl_atr)
    assert np.abs(book.marks.to_numpy()).max() <= span + 1e-9
    assert len(book.trades) > 100


def test_backtest_and_book_agree_on_the_total():
    bars, signals, atr = random_case(5)
    book = shadow_book(bars, signals, atr, CONFIG, COSTS)
    result = run_backtest(bars, signals, atr, CONFIG, COSTS)
    open_part = 0.0
    if book.open_position is not None:
        open_part = book.marks.iloc[book.open_position.entry_idx :].sum()
    assert book.marks.sum() - open_part == pytest.approx(result.trades["r_multiple"].sum())


@pytest.mark.parametrize("seed", range(8))
def test_a_book_resumed_from_its_resume_bar_continues_it_exactly(seed):
    bars, signals, atr = random_case(seed, n=400)
    full = shadow_book(bars, signals, atr, CONFIG, COSTS)
    for cut in (101, 202, 333):
        early = shadow_book(bars.iloc[:cut], signals[:cut], atr[:cut], CONFIG, COSTS)
        r = bars.index.get_loc(early.resume_from())
        later = shadow_book(bars.iloc[r:], signals[r:], atr[r:], CONFIG, COSTS)
        np.testing.assert_allclose(
            later.marks.to_numpy()[cut - r :], full.marks.to_numpy()[cut:], atol=1e-12
        )
        after = full.trades[full.trades["signal_index"] >= r]
        pd.testing.assert_frame_equal(
            later.trades.drop(columns="signal_index").reset_index(drop=True),
            after.drop(columns="signal_index").reset_index(drop=True),
        )
        assert (later.trades["signal_index"] + r).tolist() == after["signal_index"].tolist()
