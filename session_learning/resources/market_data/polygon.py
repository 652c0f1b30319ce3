"""The Polygon.io source: the aggregates REST API (v2) over HTTP, with retries, pagination,
no redirects and the API key kept out of every URL and message.
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
from collections.abc import Callable
from datetime import datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from session_learning.domain.keys import BAR_COLUMNS, ModelKey
from session_learning.resources.market_data.resource import (
    MarketDataError,
    MarketDataUnavailableError,
    ValidatedMarketDataResource,
)

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
