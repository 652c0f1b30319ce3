"""Feature functions a user might configure (``learning_settings.extra_features``)."""

import pandas as pd


def momentum_96(bars: pd.DataFrame) -> pd.DataFrame:
    """Causal: the return over the last 96 bars."""
    close = bars["close"]
    return pd.DataFrame({"user_mom_96": close / close.shift(96) - 1.0}, index=bars.index)


def peeks_ahead(bars: pd.DataFrame) -> pd.DataFrame:
    """Looks ahead: tomorrow's close. The pipeline must refuse to train on it."""
    return pd.DataFrame({"user_next_close": bars["close"].shift(-1)}, index=bars.index)
