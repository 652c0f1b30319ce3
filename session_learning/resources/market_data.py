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
from session_learning.domain.models import BAR_COLUMNS, ModelKey


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
            max_gap=_hours_or_none(self.max_gap_hours),
        )

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

    Columns: ``time`` (the bar's open time, ISO-8601 with a UTC offset such as
    ``2024-01-02T10:30:00+00:00``; in Parquet a timezone-aware timestamp) and ``open, high, low,
    close, volume``. Other columns are ignored. ``write_bars`` writes this format.
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


def read_bar_file(path: Path, key: ModelKey) -> pd.DataFrame:
    """Bars from one ``.parquet`` or ``.csv`` file, indexed by ``time``; not yet validated."""
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path)
    else:
        raw = pd.read_csv(path, dtype={"time": str})
    if "time" in raw.columns:
        times = _parse_times(raw["time"], key, path)
    elif isinstance(raw.index, pd.DatetimeIndex):
        times = raw.index
    else:
        raise BarDataError(
            f"{key}: {path.name} has no 'time' column (columns: {', '.join(map(str, raw.columns))}). "
            "Add the bar open time as ISO-8601 with an offset, e.g. 2024-01-02T10:30:00+00:00.",
            kind="columns",
            key=key,
        )
    frame = raw.loc[:, [c for c in BAR_COLUMNS if c in raw.columns]].set_axis(
        pd.DatetimeIndex(times, name="time"), axis=0
    )
    # Whole numbers (a volume column, prices written without decimals) are read as integers.
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    return frame.astype(dict.fromkeys(ints, float)) if ints else frame


def _parse_times(values: pd.Series, key: ModelKey, path: Path) -> pd.DatetimeIndex:
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.DatetimeIndex(values)  # naive stays naive: validate_bars rejects it
    text = values.astype("string").str.strip()
    naive = ~text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(dtype=bool)
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
    redacted from every error message and log line.

    Rate limits (429) are retried after the server's ``Retry-After`` (or exponential backoff),
    server errors (5xx), timeouts and dropped connections with exponential backoff
    (``backoff_seconds`` doubled each attempt), up to ``max_retries`` retries; then
    ``MarketDataUnavailableError``. Other client errors (bad key, unknown ticker) and malformed
    responses fail at once with ``MarketDataError``.
    """

    api_key: str = Field(
        repr=False,
        description="Polygon.io API key; pass dg.EnvVar('POLYGON_API_KEY'), never the key itself.",
    )
    base_url: str = Field(
        default="https://api.polygon.io", description="API root; tests point it at a local server."
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
        multiplier, timespan = POLYGON_RANGES[key.timeframe]
        ticker = urllib.parse.quote(polygon_ticker(key.symbol, self.tickers), safe=":")
        first_ms = start.value // 1_000_000
        last_ms = end.value // 1_000_000 - 1  # "to" is inclusive; [start, end) is wanted
        return (
            f"{self.base_url.rstrip('/')}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/"
            f"{first_ms}/{last_ms}?adjusted=true&sort=asc&limit=50000"
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
            seen.add(url)
            payload = self._get_json(self._with_key(url), key)
            results.extend(self._results(payload, key, url))
            next_url = payload.get("next_url")
            url = self._checked_next_url(next_url, key) if next_url else None
        return self._frame(results, key)

    # -- HTTP --------------------------------------------------------------------------------

    def _get_json(self, url: str, key: ModelKey) -> dict:
        log = dg.get_dagster_logger()
        shown = self._redact(url)
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "session_learning"}
        )
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
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
                    raise MarketDataError(
                        f"{key}: Polygon refused the request with HTTP {exc.code}{detail} "
                        f"({shown}). {_client_error_hint(exc.code)}"
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
                return self._parse(body, key, shown)
            if attempt < self.max_retries:
                log.warning(
                    f"{key}: Polygon {problem}; retry {attempt + 1}/{self.max_retries} "
                    f"in {wait:g}s ({shown})"
                )
                self._sleep(wait)
        raise MarketDataUnavailableError(
            f"{key}: Polygon unavailable after {self.max_retries + 1} attempts: {problem} "
            f"({shown}). Check the service status and network, then re-run."
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

    def _parse(self, body: bytes, key: ModelKey, shown: str) -> dict:
        try:
            payload = json.loads(body)
        except ValueError:
            start = self._redact(body[:80].decode("utf-8", "replace"))
            raise MarketDataError(
                f"{key}: Polygon returned a body that is not JSON ({shown}), starting {start!r}. "
                "Check base_url; a proxy or an outage page may be answering."
            ) from None
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

    def _with_key(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        query = [
            (name, value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if name.lower() != "apikey"
        ]
        query.append(("apiKey", self.api_key))
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _checked_next_url(self, next_url: object, key: ModelKey) -> str:
        # The key is appended to next_url, so it may only go back to the configured host.
        base = urllib.parse.urlsplit(self.base_url)
        if isinstance(next_url, str):
            target = urllib.parse.urlsplit(next_url)
            if (target.scheme, target.netloc) == (base.scheme, base.netloc):
                return next_url
        raise MarketDataError(
            f"{key}: Polygon next_url {self._redact(str(next_url))!r} does not point at "
            f"{self.base_url}; refusing to send the API key elsewhere."
        )

    def _redact(self, text: str) -> str:
        text = _API_KEY_RE.sub(r"\1***", text)
        if self.api_key and len(self.api_key) >= 6:
            text = text.replace(self.api_key, "***")
        return text


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
