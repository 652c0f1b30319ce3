"""Market data: OHLCV bars per symbol/timeframe behind one resource interface.

Sources:

- ``SyntheticMarketDataResource``: deterministic, the embedded default.
- ``FileMarketDataResource``: a folder of ``<SYMBOL>_<TIMEFRAME>.parquet`` or ``.csv`` files.
- ``PolygonMarketDataResource``: the Polygon.io aggregates REST API (v2).

Every source returns bars in the same shape: a UTC DatetimeIndex of bar open times and float
columns open, high, low, close, volume. The file and Polygon sources pass their bars through
``session_learning.domain.bars.validate_bars`` (with ``repair=True``); their ``load`` method
returns the full ``BarReport`` (repairs, gaps, warnings), ``bars`` logs it and returns the bars.

Where each part lives: ``resource.py`` (the interface, the errors, the synthetic source and the
validated base), ``files.py`` (the files source and ``write_bars``), ``polygon.py`` (the
Polygon source and its HTTP client).
"""

from session_learning.resources.market_data.files import (
    BAR_FILE_SUFFIXES,
    TIME_COLUMNS,
    FileMarketDataResource,
    read_bar_file,
    write_bars,
)
from session_learning.resources.market_data.polygon import (
    DEFAULT_POLYGON_TICKERS,
    POLYGON_MAX_PAGE_SIZE,
    POLYGON_RANGES,
    PolygonMarketDataResource,
    polygon_ticker,
)
from session_learning.resources.market_data.resource import (
    MarketDataError,
    MarketDataResource,
    MarketDataUnavailableError,
    SyntheticMarketDataResource,
    ValidatedMarketDataResource,
)

__all__ = [
    "BAR_FILE_SUFFIXES",
    "DEFAULT_POLYGON_TICKERS",
    "FileMarketDataResource",
    "MarketDataError",
    "MarketDataResource",
    "MarketDataUnavailableError",
    "POLYGON_MAX_PAGE_SIZE",
    "POLYGON_RANGES",
    "PolygonMarketDataResource",
    "SyntheticMarketDataResource",
    "TIME_COLUMNS",
    "ValidatedMarketDataResource",
    "polygon_ticker",
    "read_bar_file",
    "write_bars",
]
