"""Polygon.io source against a real HTTP server on 127.0.0.1 that speaks the aggregates JSON."""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
import urllib.parse
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from session_learning.domain.bars import BarDataError
from session_learning.domain.calendars import calendar_for
from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.resources.market_data import (
    MarketDataError,
    MarketDataUnavailableError,
    PolygonMarketDataResource,
    polygon_ticker,
)

API_KEY = "pk-SECRET-4f1c9a77e2"
KEY = ModelKey("EURUSD", "30T")
START = pd.Timestamp("2024-01-08", tz="UTC")
END = pd.Timestamp("2024-01-09", tz="UTC")
# The 30T bars of that Monday on its calendar (CME Globex FX: the day less its daily break).
DAY_BARS = len(calendar_for(KEY.symbol).expected_bar_times(START, END - KEY.bar, KEY.bar))
BACKOFF = 0.01
MAX_REQUESTS = 20  # a runaway client cannot loop forever against the fake server


@dataclass
class Reply:
    """One scripted answer: a status, headers and a JSON (or raw) body; ``hang`` holds the
    answer back until the test ends, past any client timeout."""

    body: dict | bytes = field(default_factory=dict)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class FakePolygon:
    """A ThreadingHTTPServer on an ephemeral port that answers from a queue of ``Reply``s and
    records every request path."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                fake.headers.append(dict(self.headers))
                if len(fake.requests) > MAX_REQUESTS or not fake.replies:
                    reply = Reply({"status": "ERROR", "error": "no reply scripted"}, status=418)
                else:
                    reply = fake.replies.popleft()
                if reply.hang:
                    fake.release.wait(10)
                body = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def query(self, n: int) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.requests[n]).query))


@contextmanager
def serving() -> Iterator[FakePolygon]:
    """A FakePolygon answering on 127.0.0.1 for the duration of the block."""
    fake = FakePolygon()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(5)


@pytest.fixture
def polygon() -> Iterator[FakePolygon]:
    with serving() as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def source(polygon: FakePolygon, sleeps: list[float]) -> PolygonMarketDataResource:
    return make_source(polygon.url, sleeps)


def make_source(base_url: str, sleeps: list[float], **fields) -> PolygonMarketDataResource:
    fields = {
        "api_key": API_KEY,
        "timeout_seconds": 2.0,
        "max_retries": 3,
        "backoff_seconds": BACKOFF,
        **fields,
    }
    resource = PolygonMarketDataResource(base_url=base_url, **fields)
    resource._sleep = sleeps.append
    return resource


def bars() -> pd.DataFrame:
    return generate_bars(KEY.symbol, KEY.timeframe, START, END)


def results(frame: pd.DataFrame) -> list[dict]:
    return [
        {"t": int(t.value // 1_000_000), "o": r.open, "h": r.high, "l": r.low, "c": r.close,
         "v": r.volume, "vw": r.close, "n": 12}
        for t, r in zip(frame.index, frame.itertuples(), strict=True)
    ]  # fmt: skip


def page(frame: pd.DataFrame, next_url: str | None = None, status: str = "OK") -> Reply:
    body: dict = {
        "ticker": "C:EURUSD",
        "status": status,
        "adjusted": True,
        "queryCount": len(frame),
        "resultsCount": len(frame),
        "request_id": "abc",
        "results": results(frame),
    }
    if next_url:
        body["next_url"] = next_url
    return Reply(body)


def failure(call) -> Exception:
    with pytest.raises((MarketDataError, BarDataError)) as info:
        call()
    assert_no_key(info.value)
    return info.value


def assert_no_key(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    assert API_KEY not in text


# --- the happy paths ------------------------------------------------------------------------


def test_pages_are_followed_and_bars_converted(polygon, source, sleeps):
    expected = bars()
    cursor = f"{polygon.url}/v2/aggs/ticker/C:EURUSD/range/30/minute/1704672000000/1704758399999?cursor=p"
    polygon.reply(
        page(expected.iloc[:20], next_url=cursor + "2"),
        page(expected.iloc[20:40], next_url=cursor + "3&apiKey=stale"),
        page(expected.iloc[40:]),
    )
    got = source.bars(KEY, START, END)
    pd.testing.assert_frame_equal(got, expected, check_index_type=False)
    assert str(got.index.tz) == "UTC" and got.index.name == "time"
    assert sleeps == [] and len(polygon.requests) == 3
    first = urllib.parse.urlsplit(polygon.requests[0])
    assert first.path == "/v2/aggs/ticker/C:EURUSD/range/30/minute/1704672000000/1704758399999"
    assert polygon.query(0) == {"adjusted": "true", "sort": "asc", "limit": "50000"}
    assert polygon.query(1) == {"cursor": "p2"}
    assert polygon.query(2) == {"cursor": "p3"}  # a key written into next_url is dropped
    # The key travels in the header of every page, never in a URL.
    assert [h["Authorization"] for h in polygon.headers] == [f"Bearer {API_KEY}"] * 3
    assert not any(API_KEY in path or "apiKey" in path for path in polygon.requests)


@pytest.mark.parametrize(
    ("timeframe", "path"),
    [
        ("5T", "5/minute"),
        ("15T", "15/minute"),
        ("30T", "30/minute"),
        ("1H", "1/hour"),
        ("4H", "4/hour"),
    ],
)
def test_timeframes_map_to_polygon_ranges(polygon, source, timeframe, path):
    polygon.reply(Reply({"status": "OK", "resultsCount": 0}))
    source.bars(ModelKey("XAUUSD", timeframe), START, END)
    assert f"/v2/aggs/ticker/C:XAUUSD/range/{path}/" in polygon.requests[0]


def test_results_are_cut_to_the_window(polygon, source):
    wider = generate_bars(
        KEY.symbol, KEY.timeframe, START - pd.Timedelta(hours=1), END + pd.Timedelta(hours=1)
    )
    polygon.reply(page(wider))
    got = source.bars(KEY, START, END)
    assert got.index[0] == START and got.index[-1] == END - KEY.bar


def test_no_results_is_empty_and_delayed_is_accepted(polygon, source):
    polygon.reply(Reply({"status": "OK", "resultsCount": 0, "queryCount": 0}))
    empty = source.load(KEY, START, END)
    assert empty.bars.empty and empty.warnings == ("no bars",)
    polygon.reply(page(bars(), status="DELAYED"))
    assert len(source.bars(KEY, START, END)) == DAY_BARS


def test_key_from_the_environment_in_a_dagster_run(polygon, monkeypatch):
    monkeypatch.setenv("POLYGON_API_KEY", API_KEY)
    polygon.reply(page(bars()))

    @dg.asset
    def bar_count(market_data: PolygonMarketDataResource) -> int:
        return len(market_data.bars(KEY, START, END))

    resource = PolygonMarketDataResource(api_key=dg.EnvVar("POLYGON_API_KEY"), base_url=polygon.url)
    result = dg.materialize([bar_count], resources={"market_data": resource})
    assert result.success and result.output_for_node("bar_count") == DAY_BARS
    assert polygon.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in polygon.requests[0]
    assert API_KEY not in repr(make_source(polygon.url, []))


# --- retries --------------------------------------------------------------------------------


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = Captured()
    logger = dg.get_dagster_logger()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def test_rate_limit_honours_retry_after(polygon, source, sleeps, log_lines):
    limited = {"status": "ERROR", "error": "You've exceeded the maximum requests per minute"}
    polygon.reply(
        Reply(limited, status=429, headers={"Retry-After": "2"}),
        Reply(limited, status=429),  # no Retry-After: exponential backoff
        page(bars()),
    )
    assert len(source.bars(KEY, START, END)) == DAY_BARS
    assert sleeps == [2.0, 2 * BACKOFF]
    assert len(polygon.requests) == 3
    assert any(
        "rate limited (HTTP 429)" in line and "retry 1/3 in 2s" in line for line in log_lines
    )
    assert all(API_KEY not in line and "apiKey" not in line for line in log_lines)


def test_retry_after_beyond_the_longest_wait_fails_at_once(polygon, source, sleeps):
    polygon.reply(Reply({"status": "ERROR"}, status=429, headers={"Retry-After": "3600"}))
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, MarketDataUnavailableError)
    assert "asks to wait 3600s" in str(err) and sleeps == []


@pytest.mark.parametrize("statuses", [(500,), (503,), (500, 503)])
def test_server_errors_are_retried_with_backoff(polygon, source, sleeps, statuses):
    polygon.reply(*(Reply(b"<html>oops</html>", status=s) for s in statuses), page(bars()))
    assert len(source.bars(KEY, START, END)) == DAY_BARS
    assert sleeps == [BACKOFF * 2**i for i in range(len(statuses))]


def test_persistent_server_error_fails_after_max_retries(polygon, sleeps):
    source = make_source(polygon.url, sleeps, max_retries=2)
    polygon.reply(*[Reply({"status": "ERROR", "error": "internal"}, status=500)] * 5)
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, MarketDataUnavailableError)
    assert len(polygon.requests) == 3 and sleeps == [BACKOFF, 2 * BACKOFF]
    message = str(err)
    assert (
        "EURUSD 30T: Polygon unavailable after 3 attempts: server error HTTP 500: internal"
        in message
    )
    assert "/v2/aggs/ticker/C:EURUSD/range/30/minute/" in message  # which request failed


def test_slow_response_times_out_then_succeeds(polygon, sleeps):
    source = make_source(polygon.url, sleeps, timeout_seconds=0.2)
    polygon.reply(Reply(hang=True), page(bars()))
    assert len(source.bars(KEY, START, END)) == DAY_BARS
    assert sleeps == [BACKOFF]


def test_slow_responses_beyond_the_timeout_fail_after_retries(polygon, sleeps):
    source = make_source(polygon.url, sleeps, timeout_seconds=0.2, max_retries=1)
    polygon.reply(Reply(hang=True), Reply(hang=True))
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, MarketDataUnavailableError)
    assert "no response within timeout_seconds 0.2" in str(err)
    assert len(polygon.requests) == 2 and sleeps == [BACKOFF]


def test_connection_refused_fails_after_retries(sleeps):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = make_source(f"http://127.0.0.1:{port}", sleeps, max_retries=2)
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, MarketDataUnavailableError) and "connection failed" in str(err)
    assert sleeps == [BACKOFF, 2 * BACKOFF]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",  # a proxy's error page with status 200
        b'{"status": "OK", "resultsCount": 48, "results": [{"t": 17046',  # cut off mid-body
        b"",
    ],
)
def test_a_body_that_is_not_json_is_retried_like_a_server_error(
    polygon, source, sleeps, log_lines, body
):
    polygon.reply(Reply(body), Reply(body), page(bars()))
    assert len(source.bars(KEY, START, END)) == DAY_BARS
    assert sleeps == [BACKOFF, 2 * BACKOFF] and len(polygon.requests) == 3
    assert any("not JSON" in line and "retry 1/3" in line for line in log_lines)


def test_a_body_that_stays_not_json_fails_after_the_retries(polygon, sleeps):
    source = make_source(polygon.url, sleeps, max_retries=2)
    polygon.reply(*[Reply(b"<html>502 Bad Gateway</html>")] * 3)
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, MarketDataUnavailableError)
    message = str(err)
    assert message.startswith("EURUSD 30T: Polygon unavailable after 3 attempts: ")
    assert "not JSON, starting '<html>502 Bad Gateway</html>'" in message
    assert "Check base_url" in message
    assert len(polygon.requests) == 3 and sleeps == [BACKOFF, 2 * BACKOFF]


# --- a fetch that ends early is an error, never a short frame -------------------------------


def test_a_page_with_fewer_bars_than_it_announces_fails(polygon, source):
    short = page(bars())
    short.body["results"] = short.body["results"][:30]  # resultsCount still says DAY_BARS
    polygon.reply(short)
    err = failure(lambda: source.bars(KEY, START, END))
    assert type(err) is MarketDataError
    assert f"page 1 announces {DAY_BARS} bars (resultsCount) but holds 30" in str(err)
    assert "cut short" in str(err)


def test_a_full_page_without_next_url_fails(polygon, sleeps):
    # page_size counts base aggregates (minutes): 600 minutes are 20 bars of 30 minutes.
    source = make_source(polygon.url, sleeps, page_size=600)
    expected = bars()
    cursor = f"{polygon.url}/v2/aggs/ticker/C:EURUSD/range/30/minute/1/2?cursor="
    first = page(expected.iloc[:20], next_url=cursor + "2")
    second = page(expected.iloc[20:40])  # used the whole page, but no next_url
    for reply in (first, second):
        reply.body["queryCount"] = 600
    polygon.reply(first, second)
    err = failure(lambda: source.bars(KEY, START, END))
    assert "page 2 used the whole page_size 600 (queryCount 600)" in str(err)
    assert "next_url chain was cut short" in str(err)
    assert polygon.query(0)["limit"] == "600" and len(polygon.requests) == 2


def test_a_next_url_that_leads_nowhere_fails(polygon, source):
    cursor = f"{polygon.url}/v2/aggs/ticker/C:EURUSD/range/30/minute/1/2?cursor=gone"
    polygon.reply(
        page(bars().iloc[:20], next_url=cursor),
        Reply({"status": "NOT_FOUND", "message": "cursor expired"}, status=404),
    )
    err = failure(lambda: source.bars(KEY, START, END))
    assert "HTTP 404: cursor expired" in str(err)
    assert "next_url chain was cut short" in str(err)


def test_a_configured_page_size_is_followed_to_the_end(polygon, sleeps):
    source = make_source(polygon.url, sleeps, page_size=600)
    expected = bars()
    cursor = f"{polygon.url}/v2/aggs/ticker/C:EURUSD/range/30/minute/1/2?cursor="
    pages = [
        page(expected.iloc[:20], next_url=cursor + "2"),
        page(expected.iloc[20:40], next_url=cursor + "3"),
        page(expected.iloc[40:]),  # 8 bars, 240 minutes: the last page
    ]
    for reply, minutes in zip(pages, (600, 600, 240), strict=True):
        reply.body["queryCount"] = minutes
    polygon.reply(*pages)
    pd.testing.assert_frame_equal(source.bars(KEY, START, END), expected, check_index_type=False)


@pytest.mark.parametrize("size", [0, 50_001])
def test_page_size_outside_the_api_range_is_refused(polygon, sleeps, size):
    source = make_source(polygon.url, sleeps, page_size=size)
    with pytest.raises(MarketDataError, match="page_size .* outside 1..50000"):
        source.bars(KEY, START, END)
    assert polygon.requests == []


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(polygon, source):
    with serving() as elsewhere:
        elsewhere.reply(page(bars()))
        polygon.reply(Reply(status=302, headers={"Location": f"{elsewhere.url}/v2/aggs"}))
        err = failure(lambda: source.bars(KEY, START, END))
        assert elsewhere.requests == []
    assert "HTTP 302" in str(err) and "set base_url" in str(err)


# --- client errors and malformed answers fail at once ---------------------------------------


def test_bad_key_fails_at_once_with_the_key_redacted(polygon, source, sleeps):
    # A server that echoes the key back must not get it into the message either.
    polygon.reply(Reply({"status": "ERROR", "error": f"Unknown API Key {API_KEY}"}, status=401))
    err = failure(lambda: source.bars(KEY, START, END))
    assert type(err) is MarketDataError
    message = str(err)
    assert "HTTP 401: Unknown API Key ***" in message
    assert "POLYGON_API_KEY" in message
    assert len(polygon.requests) == 1 and sleeps == []


def test_unknown_ticker_fails_at_once(polygon, source, sleeps):
    polygon.reply(Reply({"status": "NOT_FOUND", "message": "not found"}, status=404))
    err = failure(lambda: source.bars(KEY, START, END))
    assert "HTTP 404: not found" in str(err) and "tickers setting" in str(err)
    assert len(polygon.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"[1, 2]", "not an object"),
        ({"status": "OK", "resultsCount": 3}, "no 'results'"),
        ({"status": "OK"}, "no 'results'"),
        ({"status": "OK", "results": {"t": 1}}, "'results' is a dict"),
        ({"status": "ERROR", "error": f"bad request {API_KEY}"}, "status 'ERROR': bad request ***"),
        ({"status": "OK", "results": [{"t": 1704672000000, "o": 1.0}]}, "lacks h, l, c, v"),
        (
            {"status": "OK", "results": [{"t": "soon", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}]},
            "not a number",
        ),
    ],
)
def test_malformed_answers_fail_at_once(polygon, source, sleeps, body, text):
    polygon.reply(Reply(body))
    err = failure(lambda: source.bars(KEY, START, END))
    assert type(err) is MarketDataError and text in str(err)
    assert str(err).startswith("EURUSD 30T: ")
    assert len(polygon.requests) == 1 and sleeps == []


def test_bad_bars_from_polygon_fail_validation(polygon, source):
    bad = bars()
    bad.iloc[5, bad.columns.get_loc("high")] = bad["low"].iloc[5] - 0.001
    polygon.reply(page(bad))
    err = failure(lambda: source.bars(KEY, START, END))
    assert isinstance(err, BarDataError) and err.kind == "ohlc"


def test_next_url_to_another_host_never_gets_the_key(polygon, source):
    polygon.reply(page(bars().iloc[:5], next_url="https://evil.example/steal?cursor=1"))
    err = failure(lambda: source.bars(KEY, START, END))
    assert "refusing to send the API key elsewhere" in str(err)
    assert len(polygon.requests) == 1


def test_repeating_next_url_is_refused(polygon, source):
    loop = f"{polygon.url}/v2/aggs/ticker/C:EURUSD/range/30/minute/1/2?cursor=same"
    polygon.reply(page(bars().iloc[:5], next_url=loop), page(bars().iloc[5:10], next_url=loop))
    err = failure(lambda: source.bars(KEY, START, END))
    assert "pagination loops" in str(err) and len(polygon.requests) == 2


def test_empty_key_is_refused_before_any_request(polygon, sleeps):
    source = make_source(polygon.url, sleeps, api_key="")
    with pytest.raises(MarketDataError, match="POLYGON_API_KEY"):
        source.bars(KEY, START, END)
    assert polygon.requests == []


# --- tickers --------------------------------------------------------------------------------


def test_tickers():
    assert polygon_ticker("EURUSD", {}) == "C:EURUSD"
    assert polygon_ticker("XAUUSD", {}) == "C:XAUUSD"
    assert polygon_ticker("AAPL", {}) == "AAPL"
    assert polygon_ticker("BTCUSD", {"BTCUSD": "X:BTCUSD"}) == "X:BTCUSD"
    assert PolygonMarketDataResource(api_key="k").tickers["XAGUSD"] == "C:XAGUSD"
    with pytest.raises(MarketDataError, match="invalid Polygon ticker"):
        polygon_ticker("EURUSD", {"EURUSD": "C:../../v1"})


def test_configured_ticker_is_used(polygon, sleeps):
    source = make_source(polygon.url, sleeps, tickers={"BTCUSD": "X:BTCUSD"})
    polygon.reply(Reply({"status": "OK", "resultsCount": 0}))
    source.load(ModelKey("BTCUSD", "1H"), START, END, now=END)
    assert polygon.requests[0].startswith("/v2/aggs/ticker/X:BTCUSD/range/1/hour/")
