"""The market-data API failing during a learning run (rate limit, server error, garbage): the
training-set step fails clearly, with the API key redacted, and nothing is deployed.

The client's own retry and parsing rules are tested in tests/resources/test_polygon.py; here
the real asset graph runs against a local HTTP server speaking Polygon's JSON.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from session_learning.resources.market_data import PolygonMarketDataResource
from tests.assets.conftest import EURUSD, S2
from tests.assets.test_learning_assets import production_files
from tests.reliability.conftest import failures, pipeline_at, succeeded
from tests.resources.test_polygon import FakePolygon, Reply, serving

API_KEY = "pk-RELIABILITY-9b1e77c4d0"
RETRIES = 2

ANSWERS = {
    "rate limited": (
        lambda: Reply({"status": "ERROR", "error": "too many"}, 429, {"Retry-After": "0"}),
        ["MarketDataUnavailableError", "rate limited (HTTP 429)", "after 3"],
    ),
    "server error": (
        lambda: Reply({"status": "ERROR", "error": "oops"}, 500),
        ["MarketDataUnavailableError", "server error HTTP 500", "after 3"],
    ),
    "garbage": (
        lambda: Reply(b"<html>502 Bad Gateway</html>"),
        ["MarketDataUnavailableError", "not JSON", "after 3"],
    ),
    "json of another shape": (
        lambda: Reply({"status": "OK", "resultsCount": 1, "results": [{"t": "soon"}]}),
        ["MarketDataError", "lacks o, h, l, c, v"],
    ),
}


@pytest.fixture
def polygon() -> Iterator[FakePolygon]:
    with serving() as fake:
        yield fake


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_failing_market_data_api_fails_the_training_set_and_deploys_nothing(
    deployed_home, polygon, answer
):
    make_reply, expected = ANSWERS[answer]
    polygon.reply(*(make_reply() for _ in range(RETRIES + 1)))
    source = PolygonMarketDataResource(
        api_key=API_KEY,
        base_url=polygon.url,
        max_retries=RETRIES,
        backoff_seconds=0.0,
        timeout_seconds=5.0,
    )
    p = pipeline_at(deployed_home, resources={"market_data": source})
    before = production_files(p.settings.models_dir)

    result = p.run(S2)

    assert not result.success
    failed = failures(result)
    # The arena's shadow book needs the same bars: it fails too, and folds nothing.
    assert set(failed) == {"EURUSD_30T__weighted_training_set", "EURUSD_30T__shadow_book"}, failed
    # Whichever step met the fault first reports it as the server gave it.
    text = "\n".join(failed.values())
    for part in expected:
        assert part in text
    assert "EURUSD 30T" in text
    assert API_KEY not in text
    assert not any(API_KEY in str(entry) for entry in p.instance.all_logs(result.run_id))
    assert polygon.requests  # the run really asked the server
    assert not {"EURUSD_30T__candidate_model", "EURUSD_30T__deployed_model"} & succeeded(result)
    assert production_files(p.settings.models_dir) == before
    assert [e["session"] for e in p.registry.history(EURUSD)] == ["2025-03-04-08:00"]
