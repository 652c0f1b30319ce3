"""Market data: OHLCV bars per symbol/timeframe behind one resource interface.

Sources:

- ``SyntheticMarketDataResource``: deterministic, the embedded default.
- ``FileMarketDataResource``: a folder of ``<SYMBOL>_<TIMEFRAME>.parquet`` or ``.csv`` files.
- ``PolygonMarketDataResource``: the Polygon.io aggregates REST API (v2).

Every source returns bars in the same shape: a UTC DatetimeIndex of bar open times and float
columns open, high, low, close, volume. The file and Polygon sources pass their bars through
``session_learning.domain.bars.validate_bars`` (with ``repair=True``); their ``load`` method
returns the full ``BarReport`` (repairs, gaps, warnings), ``bars`` logs it and returns the bars.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from session_learning.domain import synthetic
from session_learning.domain.bars import (
    BarDataError,
    BarReport,
    bars_in_window,
    to_utc,
    validate_bars,
)
from session_learning.domain.calendars import TradingCalendar, calendar_for
from session_learning.domain.keys import BAR_COLUMNS, ModelKey


class MarketDataError(RuntimeError):
    """A source could not deliver bars: missing file, rejected request, malformed response."""


class MarketDataUnavailableError(MarketDataError):
    """The source kept failing (timeouts, connection errors, 5xx, rate limits) after retries."""


class MarketDataResource(dg.ConfigurableResource, ABC):
    """Where bars come from. Subclasses implement ``bars``."""

    calendars: dict[str, str] = Field(
        default_factory=dict,
        description="Trading calendar per symbol, overriding the defaults (FX CMEGlobex_FX, "
        "metals CMEGlobex_Metals, crypto 24/7, others 24/5): a pandas_market_calendars name "
        "such as XNYS; '*' applies to every symbol not listed.",
    )

    def calendar(self, key: ModelKey) -> TradingCalendar:
        """The trading calendar of ``key``'s symbol: gaps, staleness and synthetic bars follow it."""
        return calendar_for(key.symbol, self.calendars)

    @abstractmethod
    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of ``key`` whose open time lies in ``[start, end)``."""


class SyntheticMarketDataResource(MarketDataResource):
    """Deterministic synthetic bars with changing regimes (trend, range, volatility bursts).

    The demo and the tests run on it so that a fresh machine needs no data provider. Its bars
    carry learnable structure that flips between regimes; real markets are far less generous.
    """

    seed: int = Field(default=7, description="Seed of the generator; same seed, same bars.")

    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        return synthetic.generate_bars(
            key.symbol, key.timeframe, start, end, seed=self.seed, calendar=self.calendar(key)
        )


class ValidatedMarketDataResource(MarketDataResource):
    """A source outside this process: its bars are validated before anyone uses them.

    Subclasses implement ``_read`` (raw bars covering at least ``[start, end)``); ``load`` cuts
    the window, validates it with repairs and returns the ``BarReport``.
    """

    max_gap_hours: float | None = Field(
        default=24.0,
        description="Longest run of missing bars, in trading hours, before loading fails; "
        "shorter gaps are reported. Null disables the limit.",
    )
    model_max_gap_hours: dict[str, float | None] = Field(
        default_factory=dict,
        description="max_gap_hours per model slug (e.g. XAUUSD_15T), over the one above; the "
        "settings file named by SESSION_LEARNING_SETTINGS fills it.",
    )
    max_staleness_hours: float | None = Field(
        default=None,
        description="Fail when the newest bar closed more than this many trading hours before "
        "the end of the requested window (or now, if earlier). Null disables the check.",
    )

    @abstractmethod
    def _read(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Raw bars of ``key`` (UTC index of open times) covering at least ``[start, end)``."""

    def load(
        self, key: ModelKey, start: object, end: object, *, now: pd.Timestamp | None = None
    ) -> BarReport:
        """Validated bars of ``key`` whose open time is in ``[start, end)`` (naive means UTC),
        with every repair, gap and warning. ``now`` (default: the clock) bounds staleness."""
        if not isinstance(key, ModelKey):
            raise TypeError(f"expected a ModelKey, got {type(key).__name__}")
        start_utc, end_utc = to_utc(start, "start"), to_utc(end, "end")
        now = pd.Timestamp.now(tz="UTC") if now is None else to_utc(now, "now")
        window = bars_in_window(self._read(key, start_utc, end_utc), key, start_utc, end_utc)
        return validate_bars(
            window,
            key,
            now=min(now, end_utc),
            max_staleness=_hours_or_none(self.max_staleness_hours),
            repair=True,
            calendar=self.calendar(key),
            max_gap=_hours_or_none(self.max_gap_hours_of(key)),
        )

    def max_gap_hours_of(self, key: ModelKey) -> float | None:
        """The gap limit of ``key``: its own, else the resource-wide one."""
        return self.model_max_gap_hours.get(key.slug, self.max_gap_hours)

    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        report = self.load(key, start, end)
        log = dg.get_dagster_logger()
        for repair in report.repairs:
            log.warning(f"{key} bars repaired: {repair}")
        for warning in report.warnings:
            log.info(f"{key} bars: {warning}")
        return report.bars


def _hours_or_none(hours: float | None) -> pd.Timedelta | None:
    return None if hours is None else pd.Timedelta(hours=hours)


# --- files ----------------------------------------------------------------------------------

BAR_FILE_SUFFIXES = (".parquet", ".csv")
_OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"


class FileMarketDataResource(ValidatedMarketDataResource):
    """Bars from a folder of files, one per model: ``<SYMBOL>_<TIMEFRAME>.parquet`` or ``.csv``
    (e.g. ``EURUSD_30T.csv``).

    Columns, matched without regard to case: ``open, high, low, close, volume`` (``Open``,
    ``High``, ... as many exports write them) and the bar's open time, in the first of
    ``TIME_COLUMNS`` present (``time``, ``timestamp``, ``datetime``, ``Date``, ``Gmt time``, ...)
    or in the index (Parquet, or a CSV whose first column has no name): ISO-8601 with a UTC
    offset such as ``2024-01-02T10:30:00+00:00``, in Parquet a timezone-aware timestamp. A time
    column whose name says GMT or UTC may leave the offset out (and may be day-first,
    ``02.01.2024 10:30:00.000``). Other columns are ignored. ``write_bars`` writes this format.
    """

    directory: str = Field(
        description="Folder holding one <SYMBOL>_<TIMEFRAME>.parquet or .csv file per model."
    )

    def path(self, key: ModelKey) -> Path:
        """The file holding ``key``'s bars; raises ``MarketDataError`` if there is none."""
        folder = Path(self.directory)
        if not folder.is_dir():
            raise MarketDataError(
                f"market data folder {folder} does not exist; create it or set directory"
            )
        candidates = [_bar_file(folder, key, suffix) for suffix in BAR_FILE_SUFFIXES]
        found = [p for p in candidates if p.is_file()]
        if len(found) > 1:
            raise MarketDataError(
                f"{key}: both {found[0].name} and {found[1].name} exist in {folder}; "
                "remove one so that there is a single source of truth"
            )
        if not found:
            available = sorted(
                p.name for p in folder.iterdir() if p.is_file() and p.suffix in BAR_FILE_SUFFIXES
            )
            listed = ", ".join(available) if available else "none"
            raise MarketDataError(
                f"{key}: no bar file {candidates[0].name} or {candidates[1].name} in {folder}; "
                f"files there: {listed}"
            )
        return found[0]

    def _read(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return read_bar_file(self.path(key), key)


def _bar_file(folder: Path, key: ModelKey, suffix: str) -> Path:
    # The name comes from a validated ModelKey (letters, digits and a known timeframe); the
    # check below keeps that true should the key rules ever loosen.
    path = folder / f"{key.slug}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise MarketDataError(f"{key}: bar file {path} would lie outside {folder}")
    return path


# Names of the bar open time, matched without regard to case, in this order of preference.
TIME_COLUMNS = (
    "time",
    "timestamp",
    "datetime",
    "date_time",
    "open_time",
    "gmt time",
    "time_utc",
    "timestamp_utc",
    "date",
)
# A CSV written from a frame whose index has no name starts with a column without a name.
_UNNAMED_FIRST = ("", "unnamed: 0")
_UTC_NAME_RE = re.compile(r"gmt|utc", re.IGNORECASE)
# Day-first times without an offset, as GMT exports (``Gmt time``) write them.
_DAY_FIRST_FORMAT = "%d.%m.%Y %H:%M:%S.%f"


def read_bar_file(path: Path, key: ModelKey) -> pd.DataFrame:
    """Bars from one ``.parquet`` or ``.csv`` file, indexed by their open time; not yet
    validated. Column names are matched without regard to case (``Open`` is ``open``); the
    time is the first of ``TIME_COLUMNS`` present, else the index."""
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path)
        time_column = _time_column(list(raw.columns))
    else:
        header = list(pd.read_csv(path, nrows=0).columns)
        time_column = _time_column(header) or _unnamed_first(header)
        raw = pd.read_csv(path, dtype={time_column: str} if time_column else None)
    names = _bar_column_names(raw, key, path)
    if time_column is not None:
        times = _parse_times(raw[time_column], key, path, naive_is_utc=_says_utc(time_column))
    elif isinstance(raw.index, pd.DatetimeIndex):
        times = raw.index
        if times.tz is None and _says_utc(str(raw.index.name or "")):
            times = times.tz_localize("UTC")
    else:
        raise BarDataError(
            f"{key}: {path.name} has no time column (columns: {_listed(raw.columns)}). Name the "
            f"bar open time one of {', '.join(TIME_COLUMNS)} (any case), as ISO-8601 with an "
            "offset, e.g. 2024-01-02T10:30:00+00:00.",
            kind="columns",
            key=key,
        )
    frame = raw.loc[:, list(names)].set_axis(list(names.values()), axis=1)
    frame = frame.set_axis(pd.DatetimeIndex(times, name="time"), axis=0)
    # Whole numbers (a volume column, prices written without decimals) are read as integers.
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    return frame.astype(dict.fromkeys(ints, float)) if ints else frame


def _time_column(columns: list) -> str | None:
    by_name = {}
    for column in columns:
        by_name.setdefault(str(column).strip().lower(), column)
    return next((by_name[name] for name in TIME_COLUMNS if name in by_name), None)


def _unnamed_first(columns: list) -> str | None:
    if columns and str(columns[0]).strip().lower() in _UNNAMED_FIRST:
        return columns[0]
    return None


def _says_utc(name: str) -> bool:
    return bool(_UTC_NAME_RE.search(name))


def _listed(columns: object) -> str:
    return ", ".join(map(str, columns)) or "none"


def _bar_column_names(raw: pd.DataFrame, key: ModelKey, path: Path) -> dict:
    """File column -> bar column for ``open, high, low, close, volume``, any case."""
    found: dict[str, list] = {name: [] for name in BAR_COLUMNS}
    for column in raw.columns:
        name = str(column).strip().lower()
        if name in found:
            found[name].append(column)
    twice = {name: columns for name, columns in found.items() if len(columns) > 1}
    if twice:
        name, columns = next(iter(twice.items()))
        raise BarDataError(
            f"{key}: {path.name} has {len(columns)} columns for {name} "
            f"({', '.join(map(str, columns))}); names are matched without regard to case, "
            "so keep one.",
            kind="columns",
            key=key,
        )
    missing = [name for name, columns in found.items() if not columns]
    if missing:
        raise BarDataError(
            f"{key}: {path.name} has no {', '.join(missing)} column (names are matched without "
            f"regard to case); its columns are: {_listed(raw.columns)}. Name them open, high, "
            "low, close, volume (or Open, High, ...).",
            kind="columns",
            key=key,
        )
    return {columns[0]: name for name, columns in found.items()}


def _parse_times(
    values: pd.Series, key: ModelKey, path: Path, *, naive_is_utc: bool = False
) -> pd.DatetimeIndex:
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.DatetimeIndex(values)
        # Naive stays naive (validate_bars rejects it) unless the column's name says UTC.
        return times.tz_localize("UTC") if naive_is_utc and times.tz is None else times
    text = values.astype("string").str.strip()
    naive = ~text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    if naive_is_utc:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        day_first = pd.to_datetime(text, format=_DAY_FIRST_FORMAT, utc=True, errors="coerce")
        parsed = parsed.fillna(day_first) if parsed.isna().any() else parsed
        naive = np.zeros(len(text), dtype=bool)
    else:
        parsed = None
    if naive.any():
        row = int(np.flatnonzero(naive)[0])
        raise BarDataError(
            f"{key}: {int(naive.sum())} times in {path.name} have no UTC offset "
            f"(first {values.iloc[row]!r} in data row {row + 1}). Write open times as ISO-8601 "
            "with an offset, e.g. 2024-01-02T10:30:00+00:00.",
            kind="timezone",
            key=key,
            count=int(naive.sum()),
        )
    if parsed is None:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BarDataError(
            f"{key}: {int(bad.sum())} times in {path.name} are not ISO-8601 times "
            f"(first {values.iloc[row]!r} in data row {row + 1}). Fix them at the source.",
            kind="index",
            key=key,
            count=int(bad.sum()),
        )
    return pd.DatetimeIndex(parsed)


def write_bars(
    directory: str | Path, key: ModelKey, bars: pd.DataFrame, fmt: str = "parquet"
) -> Path:
    """Write ``bars`` as ``<directory>/<SYMBOL>_<TIMEFRAME>.<fmt>`` (``parquet`` or ``csv``) in
    the format ``FileMarketDataResource`` reads; returns the path. Writes what it is given,
    without validation, so tests and demos can also write bad bars."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown bar file format {fmt!r}; use 'parquet' or 'csv'")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = _bar_file(folder, key, f".{fmt}")
    table = bars.reset_index(names="time")
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        table.to_parquet(tmp, index=False)
    else:
        if isinstance(bars.index, pd.DatetimeIndex):
            table["time"] = [stamp.isoformat() for stamp in bars.index]
        table.to_csv(tmp, index=False)
    tmp.replace(path)  # readers never see a half-written file
    return path


# --- Polygon.io -----------------------------------------------------------------------------

# Timeframe -> (multiplier, timespan) of the aggregates endpoint.
POLYGON_RANGES: dict[str, tuple[int, str]] = {
    "5T": (5, "minute"),
    "15T": (15, "minute"),
    "30T": (30, "minute"),
    "1H": (1, "hour"),
    "4H": (4, "hour"),
}
DEFAULT_POLYGON_TICKERS: dict[str, str] = {
    "EURUSD": "C:EURUSD",
    "GBPUSD": "C:GBPUSD",
    "USDJPY": "C:USDJPY",
    "XAUUSD": "C:XAUUSD",
    "XAGUSD": "C:XAGUSD",
}
_CURRENCY_PAIR_RE = re.compile(r"^[A-Z]{6}$")
_TICKER_RE = re.compile(r"^(?:[A-Z]:)?[A-Z0-9.]{1,24}$")
_API_KEY_RE = re.compile(r"(apiKey=)[^&#\s'\"]*", re.IGNORECASE)
_RESULT_FIELDS = {"t": "time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
_MAX_PAGES = 10_000
POLYGON_MAX_PAGE_SIZE = 50_000  # the aggregates endpoint's largest ``limit``


def polygon_ticker(symbol: str, tickers: dict[str, str]) -> str:
    """Polygon's ticker for ``symbol``: the ``tickers`` entry if any, else ``C:<symbol>`` for a
    six-letter currency or metal pair (``EURUSD``, ``XAUUSD``), else the symbol itself."""
    ticker = tickers.get(symbol) or (f"C:{symbol}" if _CURRENCY_PAIR_RE.match(symbol) else symbol)
    if not _TICKER_RE.match(ticker):
        raise MarketDataError(
            f"invalid Polygon ticker {ticker!r} for {symbol}; expected e.g. C:EURUSD, X:BTCUSD or AAPL"
        )
    return ticker


class PolygonMarketDataResource(ValidatedMarketDataResource):
    """Bars from the Polygon.io aggregates API (``/v2/aggs/ticker/.../range/...``).

    Configure the key from the environment so that it never appears in the UI or in run
    config: ``PolygonMarketDataResource(api_key=dg.EnvVar("POLYGON_API_KEY"))``. The key is
    sent in an ``Authorization: Bearer`` header, only to ``base_url``'s host, never in a URL;
    should a server echo it back, it is redacted from every error message and log line.

    Rate limits (429) are retried after the server's ``Retry-After`` (or exponential backoff),
    server errors (5xx), timeouts, dropped connections and bodies that are not JSON (a cut-off
    answer, a proxy's error page) with exponential backoff (``backoff_seconds`` doubled each
    attempt), up to ``max_retries`` retries; then ``MarketDataUnavailableError``. Other client
    errors (bad key, unknown ticker) and malformed responses fail at once with
    ``MarketDataError``.

    A fetch is complete or it fails: a page with fewer results than its ``resultsCount``, or a
    page that used up the whole ``page_size`` (``queryCount``) without a ``next_url`` to the
    rest, is a ``MarketDataError``, never a shorter frame.
    """

    api_key: str = Field(
        repr=False,
        description="Polygon.io API key; pass dg.EnvVar('POLYGON_API_KEY'), never the key itself.",
    )
    base_url: str = Field(
        default="https://api.polygon.io",
        description="API root (SESSION_LEARNING_POLYGON_BASE_URL); a proxy or a local server.",
    )
    page_size: int = Field(
        default=POLYGON_MAX_PAGE_SIZE,
        description="Base aggregates (minutes) per page, the request's 'limit', 1 to 50000 "
        "(SESSION_LEARNING_POLYGON_PAGE_SIZE); longer ranges follow next_url.",
    )
    tickers: dict[str, str] = Field(
        default=DEFAULT_POLYGON_TICKERS,
        description="Symbol -> Polygon ticker. Symbols not listed map to C:<SYMBOL> when they "
        "are six letters (FX and metals), else to themselves.",
    )
    timeout_seconds: float = Field(default=30.0, description="Timeout of one HTTP request.")
    max_retries: int = Field(
        default=5, description="Retries after a rate limit, server error or timeout."
    )
    backoff_seconds: float = Field(
        default=1.0, description="First retry delay; doubled on each further retry."
    )
    max_backoff_seconds: float = Field(
        default=120.0,
        description="Longest single wait; a Retry-After beyond it fails instead of waiting.",
    )

    # Injectable for tests: how to wait between retries.
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def request_url(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> str:
        """The first page's URL, without the API key."""
        if key.timeframe not in POLYGON_RANGES:
            raise MarketDataError(f"{key}: no Polygon range for timeframe {key.timeframe}")
        if not 1 <= self.page_size <= POLYGON_MAX_PAGE_SIZE:
            raise MarketDataError(
                f"Polygon page_size {self.page_size} is outside 1..{POLYGON_MAX_PAGE_SIZE}; "
                "set SESSION_LEARNING_POLYGON_PAGE_SIZE (or page_size) within it"
            )
        multiplier, timespan = POLYGON_RANGES[key.timeframe]
        ticker = urllib.parse.quote(polygon_ticker(key.symbol, self.tickers), safe=":")
        first_ms = start.value // 1_000_000
        last_ms = end.value // 1_000_000 - 1  # "to" is inclusive; [start, end) is wanted
        return (
            f"{self.base_url.rstrip('/')}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/"
            f"{first_ms}/{last_ms}?adjusted=true&sort=asc&limit={self.page_size}"
        )

    def _read(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if not self.api_key:
            raise MarketDataError("Polygon api_key is empty; set POLYGON_API_KEY")
        url: str | None = self.request_url(key, start, end)
        results: list = []
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= _MAX_PAGES:
                raise MarketDataError(f"{key}: Polygon pagination loops at {self._redact(url)}")
            payload = self._get_json(url, key, follow_up=bool(seen))
            seen.add(url)
            page = self._results(payload, key, url)
            self._check_complete(payload, page, key, url, len(seen))
            results.extend(page)
            next_url = payload.get("next_url")
            url = self._checked_next_url(next_url, key) if next_url else None
        return self._frame(results, key)

    def _check_complete(
        self, payload: dict, page: list, key: ModelKey, url: str, number: int
    ) -> None:
        """A page that holds fewer bars than it announces, or that filled the page size without
        pointing to the rest, means the answer was cut short: fail instead of returning less."""
        shown = self._redact(url)
        promised = payload.get("resultsCount")
        if isinstance(promised, int) and promised != len(page):
            raise MarketDataError(
                f"{key}: Polygon page {number} announces {promised} bars (resultsCount) but "
                f"holds {len(page)} ({shown}); the answer was cut short. Re-run the fetch; if "
                "it persists, check base_url (a proxy may truncate responses)."
            )
        queried = payload.get("queryCount")
        if isinstance(queried, int) and queried >= self.page_size and not payload.get("next_url"):
            raise MarketDataError(
                f"{key}: Polygon page {number} used the whole page_size {self.page_size} "
                f"(queryCount {queried}) but gives no next_url to the rest ({shown}); the "
                "next_url chain was cut short, so the bars would end early. Re-run the fetch, "
                "or check base_url (a proxy may drop fields)."
            )

    # -- HTTP --------------------------------------------------------------------------------

    def _get_json(self, url: str, key: ModelKey, *, follow_up: bool = False) -> dict:
        log = dg.get_dagster_logger()
        shown = self._redact(url)
        request = urllib.request.Request(
            url,
            headers={
                "Accept": "application/json",
                "User-Agent": "session_learning",
                "Authorization": f"Bearer {self.api_key}",
            },
        )
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds)
            try:
                with _OPENER.open(request, timeout=self.timeout_seconds) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                detail = self._error_detail(exc)
                exc.close()
                if exc.code == 429:
                    problem = f"rate limited (HTTP 429){detail}"
                    retry_after = _retry_after_seconds(exc.headers.get("Retry-After"))
                    if retry_after is not None:
                        if retry_after > self.max_backoff_seconds:
                            raise MarketDataUnavailableError(
                                f"{key}: Polygon {problem} and asks to wait {retry_after:g}s, "
                                f"more than max_backoff_seconds {self.max_backoff_seconds:g}; "
                                f"try later ({shown})"
                            ) from None
                        wait = max(wait, retry_after)
                elif exc.code >= 500 or exc.code == 408:
                    problem = f"server error HTTP {exc.code}{detail}"
                else:
                    if 300 <= exc.code < 400:
                        where = self._redact(str(exc.headers.get("Location", "elsewhere")))
                        hint = (
                            f"It redirects to {where}; set base_url to the address that answers "
                            "(redirects are not followed, so the key goes nowhere else)."
                        )
                    elif follow_up and exc.code in (404, 410):
                        hint = "The next_url chain was cut short: re-run the fetch."
                    else:
                        hint = _client_error_hint(exc.code)
                    raise MarketDataError(
                        f"{key}: Polygon refused the request with HTTP {exc.code}{detail} "
                        f"({shown}). {hint}"
                    ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                if isinstance(reason, TimeoutError):
                    problem = f"no response within timeout_seconds {self.timeout_seconds:g}"
                else:
                    problem = (
                        f"connection failed ({self._redact(str(reason)) or type(reason).__name__})"
                    )
            else:
                payload = _json_or_marker(body)
                if payload is not _NOT_JSON:
                    return self._parse(payload, key, shown)
                start = self._redact(body[:80].decode("utf-8", "replace"))
                problem = f"a body that is not JSON, starting {start!r}"
            if attempt < self.max_retries:
                log.warning(
                    f"{key}: Polygon {problem}; retry {attempt + 1}/{self.max_retries} "
                    f"in {wait:g}s ({shown})"
                )
                self._sleep(wait)
        hint = (
            "Check base_url; a proxy or an outage page may be answering."
            if problem.startswith("a body that is not JSON")
            else "Check the service status and network, then re-run."
        )
        raise MarketDataUnavailableError(
            f"{key}: Polygon unavailable after {self.max_retries + 1} attempts: {problem} "
            f"({shown}). {hint}"
        )

    def _error_detail(self, exc: urllib.error.HTTPError) -> str:
        try:
            body = exc.read(2000)
        except (OSError, http.client.HTTPException):
            return ""
        try:
            payload = json.loads(body)
        except ValueError:
            return ""
        if not isinstance(payload, dict):
            return ""
        message = payload.get("error") or payload.get("message")
        return f": {self._redact(str(message))[:200]}" if message else ""

    def _parse(self, payload: object, key: ModelKey, shown: str) -> dict:
        if not isinstance(payload, dict):
            raise MarketDataError(
                f"{key}: Polygon returned JSON that is not an object ({shown}); check base_url."
            )
        status = payload.get("status")
        if status not in ("OK", "DELAYED"):
            message = payload.get("error") or payload.get("message") or "no message"
            raise MarketDataError(
                f"{key}: Polygon answered with status {status!r}: {self._redact(str(message))[:200]} "
                f"({shown})."
            )
        if status == "DELAYED":
            dg.get_dagster_logger().warning(f"{key}: Polygon data is delayed (plan limit)")
        return payload

    # -- response -> bars --------------------------------------------------------------------

    def _results(self, payload: dict, key: ModelKey, url: str) -> list:
        results = payload.get("results")
        if results is None:
            if payload.get("resultsCount") == 0:
                return []  # Polygon leaves "results" out when nothing matched
            raise MarketDataError(
                f"{key}: Polygon response has no 'results' (resultsCount "
                f"{payload.get('resultsCount')!r}) ({self._redact(url)}); the API may have changed."
            )
        if not isinstance(results, list):
            raise MarketDataError(
                f"{key}: Polygon 'results' is a {type(results).__name__}, not a list ({self._redact(url)})."
            )
        return results

    def _frame(self, results: list, key: ModelKey) -> pd.DataFrame:
        columns: dict[str, list] = {name: [] for name in _RESULT_FIELDS.values()}
        for position, item in enumerate(results):
            missing = [f for f in _RESULT_FIELDS if not isinstance(item, dict) or f not in item]
            if missing:
                raise MarketDataError(
                    f"{key}: Polygon result {position} lacks {', '.join(missing)} "
                    f"(needs t, o, h, l, c, v); the API may have changed."
                )
            for field, name in _RESULT_FIELDS.items():
                columns[name].append(item[field])
        try:
            times = pd.to_datetime(
                np.asarray(columns.pop("time"), dtype=np.int64), unit="ms", utc=True
            )
            values = {name: np.asarray(columns[name], dtype=float) for name in BAR_COLUMNS}
        except (TypeError, ValueError, OverflowError) as exc:
            raise MarketDataError(
                f"{key}: Polygon results hold a value that is not a number ({exc}); "
                "the API may have changed."
            ) from None
        return pd.DataFrame(values, index=pd.DatetimeIndex(times, name="time"))

    # -- URLs and secrets --------------------------------------------------------------------

    def _without_key(self, url: str) -> str:
        """``url`` without an ``apiKey`` parameter: the key travels only in the header."""
        parts = urllib.parse.urlsplit(url)
        query = [
            (name, value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if name.lower() != "apikey"
        ]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _checked_next_url(self, next_url: object, key: ModelKey) -> str:
        # The key goes with every request, so next_url may only lead back to the configured
        # host; a key the server wrote into it is dropped (ours is in the header).
        base = urllib.parse.urlsplit(self.base_url)
        if isinstance(next_url, str):
            target = urllib.parse.urlsplit(next_url)
            if (target.scheme, target.netloc) == (base.scheme, base.netloc):
                return self._without_key(next_url)
        raise MarketDataError(
            f"{key}: Polygon next_url {self._redact(str(next_url))!r} does not point at "
            f"{self.base_url}; refusing to send the API key elsewhere."
        )

    def _redact(self, text: str) -> str:
        text = _API_KEY_RE.sub(r"\1***", text)
        if self.api_key and len(self.api_key) >= 6:
            text = text.replace(self.api_key, "***")
        return text


_NOT_JSON = object()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are answered as errors: urllib would carry the Authorization header along,
    to whatever host the Location names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _json_or_marker(body: bytes) -> object:
    """The parsed body, or ``_NOT_JSON`` when it is not JSON (cut off, an HTML error page)."""
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if readable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - datetime.now(when.tzinfo)).total_seconds(), 0.0)


def _client_error_hint(code: int) -> str:
    if code in (401, 403):
        return "Check POLYGON_API_KEY and that the plan covers this data."
    if code == 404:
        return "Check the symbol's ticker (the tickers setting) and the timeframe."
    return "Check the request; retrying will not help."
