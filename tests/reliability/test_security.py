"""Security basics: the UI on loopback, secrets only through the environment and never in
metadata, logs or stored files, SQL only with bound parameters, model loading that never runs
code, and file paths that cannot leave their folders."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier
from sqlalchemy.engine import make_url

from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import validate_trades
from session_learning.resources.exports import write_session_exports
from session_learning.resources.registry import (
    CorruptModelError,
    ModelRegistry,
    card_digest,
    judgement_digest,
)
from session_learning.resources.value_store import ValueStoreIOManager
from session_learning.settings import JOURNAL_URL_VAR
from tests.assets.conftest import EURUSD, S1
from tests.builders import frame, trade
from tests.judgements import judge_and_promote
from tests.reliability.conftest import REPO, FaultPipeline, seed_journal, tree

PACKAGE = REPO / "session_learning"


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in PACKAGE.rglob("*.py")]


# --- the webserver listens on loopback --------------------------------------------------------

_UI_COMMAND = re.compile(r"(dagster dev|dagster-webserver|dagster_webserver)\b[^\n`']*")
_HOST = re.compile(r"(?:-h|--host|--dagit-host)[ =](\S+)")


def test_ui_commands_bind_the_webserver_to_loopback():
    """Every command that starts the UI in the Makefile, scripts and docs either names
    127.0.0.1 or leaves the host to dagster-webserver's default, which is 127.0.0.1."""
    texts = [REPO / "Makefile", REPO / "README.md", *(REPO / "scripts").iterdir()]
    texts += list((REPO / "docs").rglob("*.md"))
    commands = [
        (path.name, match.group(0))
        for path in texts
        if path.is_file()
        for match in _UI_COMMAND.finditer(path.read_text(errors="replace"))
    ]
    assert any(name == "Makefile" for name, _ in commands)  # make ui is found and checked
    for name, command in commands:
        hosts = _HOST.findall(command)
        assert all(host in ("127.0.0.1", "localhost") for host in hosts), (name, command)
        assert "0.0.0.0" not in command, (name, command)
    # dagster dev passes --host to the webserver only when given, so the webserver's own
    # default applies (DAGSTER_WEBSERVER_HOST in the environment would override it).
    from dagster_webserver.cli import cli

    [host] = [option for option in cli.params if option.name == "host"]
    assert host.default == "127.0.0.1"


# --- secrets: only from the environment, never shown ----------------------------------------


@pytest.mark.postgres
def test_journal_password_appears_in_no_event_log_or_stored_file(
    secret_journal_url, tmp_path, monkeypatch, caplog, capfd
):
    password = make_url(secret_journal_url).password
    monkeypatch.setenv(JOURNAL_URL_VAR, secret_journal_url)
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"
    p = FaultPipeline(home, journal_url=secret_journal_url)
    # The definitions hold the variable's name, never its value.
    journal_resource = p.defs.resources["journal"]
    assert isinstance(journal_resource.url, dg.EnvVar) and journal_resource.url == JOURNAL_URL_VAR

    seed_journal(p)
    learned = p.run(S1)
    assert learned.success
    monitored = p.monitor("2025-03-05T10:00:00+00:00")
    assert monitored.success
    # A run that fails on the journal: the error names the database, not the password.
    wrong_port = secret_journal_url.replace(":5439/", ":1/")
    monkeypatch.setenv(JOURNAL_URL_VAR, wrong_port)
    failed = FaultPipeline(home, journal_url=wrong_port)
    failed.instance = p.instance
    broken = failed.run("2025-03-04-12:00")
    assert not broken.success

    seen = []
    for run in (learned, monitored, broken):
        seen.append(dg.serialize_value(p.instance.get_run_by_id(run.run_id)))
        seen += [dg.serialize_value(entry) for entry in p.instance.all_logs(run.run_id)]
    assert any("unreachable" in text for text in seen)  # the failure was recorded
    out, err = capfd.readouterr()
    seen += [caplog.text, out, err]
    seen += [data.decode(errors="replace") for data in tree(home).values()]
    assert all(password not in text for text in seen)


def test_polygon_key_is_read_from_the_environment_only():
    """The definitions wrap POLYGON_API_KEY in an EnvVar: the key never sits in code or config."""
    from session_learning.definitions import build_market_data
    from session_learning.settings import Settings

    source = build_market_data(Settings(home=Path("/nonexistent"), market_data="polygon"))
    assert isinstance(source.api_key, dg.EnvVar) and source.api_key == "POLYGON_API_KEY"


# --- SQL only through bound parameters --------------------------------------------------------

HOSTILE = [
    "EUR'); DROP TABLE trades; --",
    "x' OR '1'='1",
    "'; SELECT pg_sleep(5); --",
    "%(symbol)s %s ? :p $1",
    'EUR"USD\\',
]


def test_hostile_strings_are_data_in_every_journal_query(journal, tmp_path):
    """(tests/resources/test_journal.py::test_hostile_symbol_is_stored_as_data covers the
    append and the window query; this goes through every other query too.)"""
    rows = [trade(trade_id="innocent")] + [
        {**trade(trade_id=h, symbol=h, timeframe=h[:8]), "model_version": h} for h in HOSTILE
    ]
    assert journal.add_trades(frame(rows)) == len(rows)
    csv = tmp_path / "more.csv"
    frame([{**trade(trade_id=f"csv-{h}", symbol=h)} for h in HOSTILE]).to_csv(csv, index=False)
    assert journal.import_csv(csv).written == len(HOSTILE)
    total = len(rows) + len(HOSTILE)

    assert journal.existing_trade_ids(HOSTILE) == set(HOSTILE)
    assert journal.existing_trade_ids(["x' OR '1'='1' --"]) == set()
    for h in HOSTILE:
        found = journal.trades_of_version(h, h[:8], h)
        assert list(found["trade_id"]) == [h]  # exactly that row, not "every row"
    window = journal.trades_exited_between(
        pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    assert set(window["symbol"]) == {"EURUSD", *HOSTILE}
    assert journal.count_trades() == total and journal.count_trades_after(0) == total
    assert journal.unplaceable_trades().empty

    for i, h in enumerate(HOSTILE):
        signal = {
            "signal_id": h,
            "symbol": h,
            "timeframe": "30T",
            "direction": "long",
            "bar_time": f"2025-01-06T0{i}:00:00+00:00",
            "created_at": h,
            "entry_time": "2025-01-06T05:00:00+00:00",
            "entry_price": 1.1,
            "take_profit": 1.102,
            "stop_loss": 1.099,
            "confidence": 0.6,
            "edge": 0.1,
            "expires_at": h,
            "model_version": h,
        }
        assert journal.add_signal(signal)
        assert not journal.add_signal(signal)  # the same model and bar: refused, not doubled
    assert sorted(journal.open_signals()["signal_id"]) == sorted(HOSTILE)
    assert journal.close_signal(HOSTILE[1], trade(trade_id="closed", symbol=HOSTILE[1]))
    assert not journal.close_signal("x' OR '1'='1' --", trade(trade_id="never"))
    assert sorted(journal.open_signals()["signal_id"]) == sorted(set(HOSTILE) - {HOSTILE[1]})
    assert journal.count_trades() == total + 1

    for h in HOSTILE:
        journal.add_alert("gate_rejection", h, h)
    assert sorted(journal.alerts()["message"]) == sorted(HOSTILE)


_RAW_SQL_CALLS = {"text", "exec_driver_sql", "executescript", "literal_column", "literal"}


def test_no_sql_is_built_from_strings():
    """Every statement is SQLAlchemy Core with bound parameters: no textual SQL anywhere."""
    offenders = []
    for path, tree_ in _sources():
        for node in ast.walk(tree_):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                base = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                if name in _RAW_SQL_CALLS and base in ("sa", "sqlalchemy", "conn", "connection"):
                    offenders.append(f"{path.name}:{node.lineno} {base}.{name}")
                literal = ast.Constant | ast.JoinedStr | ast.BinOp  # "...", f"...", "..." + x
                if name == "execute" and node.args and isinstance(node.args[0], literal):
                    offenders.append(f"{path.name}:{node.lineno} execute(<string>)")
    assert not offenders


# --- model loading never runs code ------------------------------------------------------------


class _Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def stored(tmp_path) -> tuple[ModelRegistry, str, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    model = CatBoostClassifier(iterations=10, depth=2, verbose=False, allow_writing_files=False)
    model.fit(x, (x[:, 0] > 0).astype(int))
    registry = ModelRegistry(tmp_path / "models")
    version = registry.save_candidate(EURUSD, model, {}, datetime(2025, 3, 4, 12, tzinfo=UTC))
    judge_and_promote(registry, EURUSD, version, reason="test", session=S1)
    return registry, version, tmp_path / "code-ran"


def _catboost_loads(monkeypatch) -> list:
    calls: list = []
    real = CatBoostClassifier.load_model

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("format"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CatBoostClassifier, "load_model", spy)
    return calls


def test_pickle_in_place_of_a_model_is_refused_before_catboost_sees_it(stored, monkeypatch):
    registry, version, marker = stored
    path = registry.root / EURUSD.slug / "versions" / version / "model.cbm"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    calls = _catboost_loads(monkeypatch)
    for load in (lambda: registry.load(EURUSD, version), lambda: registry.production(EURUSD)):
        with pytest.raises(CorruptModelError, match=re.escape(str(path))):
            load()
    assert calls == [] and not marker.exists()


def test_pickle_with_a_forged_checksum_is_read_as_catboost_format_only(stored, monkeypatch):
    """Even an attacker who rewrites and reseals the card and judgement gets no code run: the bytes go to CatBoost's
    native reader, which does not unpickle."""
    registry, version, marker = stored
    folder = registry.root / EURUSD.slug / "versions" / version
    payload = pickle.dumps(_Payload(marker))
    (folder / "model.cbm").write_bytes(payload)
    card = json.loads((folder / "card.json").read_text())
    card.update(model_sha256=hashlib.sha256(payload).hexdigest(), model_bytes=len(payload))
    card["card_sha256"] = card_digest(card)
    (folder / "card.json").write_text(json.dumps(card))
    judgement = json.loads((folder / "judgement.json").read_text())
    judgement.update(model_sha256=card["model_sha256"], card_sha256=card["card_sha256"])
    judgement["judgement_sha256"] = judgement_digest(judgement)
    (folder / "judgement.json").write_text(json.dumps(judgement))
    calls = _catboost_loads(monkeypatch)
    with pytest.raises(CorruptModelError, match="CatBoost cannot read it"):
        registry.load(EURUSD, version)
    assert calls == ["cbm"] and not marker.exists()


_UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}
_UNSAFE_CALLS = {"read_pickle", "to_pickle", "load_pickle"}


def test_nothing_in_the_package_can_unpickle():
    offenders = []
    for path, tree_ in _sources():
        for node in ast.walk(tree_):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            offenders += [
                f"{path.name}:{node.lineno} import {n}" for n in names if n in _UNSAFE_MODULES
            ]
            if isinstance(node, ast.Attribute) and node.attr in _UNSAFE_CALLS:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                offenders.append(f"{path.name}:{node.lineno} allow_pickle=")
    assert not offenders


# --- paths built from outside input stay in their folders ------------------------------------
# (registry: tests/resources/test_registry.py::test_model_key_cannot_escape_the_root and
#  ::test_registry_rejects_tampered_keys_and_version_paths; file market data:
#  tests/resources/test_market_data.py::test_hostile_symbols_never_reach_the_file_system)


def test_export_file_names_depend_on_the_session_only(tmp_path):
    hostile = ["../../evil", "/etc/passwd", "..", "a/b", "EURUSD\x00"]
    rows = [trade(trade_id=f"t{i}", symbol=s, win=i % 2 == 0) for i, s in enumerate(hostile)]
    models = [ModelKey("EURUSD", "30T")]
    folder = tmp_path / "exports" / "inner"
    write_session_exports(validate_trades(frame(rows)), pd.Timestamp("2025-01-06T08:00Z"), folder)
    write_session_exports(
        validate_trades(frame(rows), known_models=models),
        pd.Timestamp("2025-01-06T08:00Z"),
        folder,
    )
    assert sorted(p.name for p in (tmp_path / "exports").rglob("*")) == [
        "all_trades_20250106_080000.csv",
        "inner",
        "losers_20250106_080000.csv",
        "quarantine_20250106_080000.csv",
        "winners_20250106_080000.csv",
    ]


@pytest.mark.parametrize(
    ("asset_key", "partition_key"),
    [
        (["session_trades"], "../../evil"),
        (["session_trades"], ".."),
        (["session_trades"], "a/b"),
        (["session_trades"], "..\\evil"),
        (["..", "..", "evil"], None),
        (["x/../../evil"], None),
        ([""], None),
    ],
)
def test_value_store_refuses_keys_that_would_leave_its_folder(tmp_path, asset_key, partition_key):
    base = tmp_path / "sandbox" / "values"
    store = ValueStoreIOManager(base_dir=str(base))
    kwargs = {"partition_key": partition_key} if partition_key is not None else {}
    output = dg.build_output_context(asset_key=dg.AssetKey(asset_key), **kwargs)
    with pytest.raises(ValueError, match="cannot be a file name"):
        store.handle_output(output, {"stolen": True})
    with pytest.raises(ValueError, match="cannot be a file name"):
        store.load_input(dg.build_input_context(asset_key=dg.AssetKey(asset_key), **kwargs))
    assert tree(tmp_path) == {}
    # An ordinary time-window key still works, colons dropped.
    ok = dg.build_output_context(asset_key=dg.AssetKey(["x"]), partition_key="2025-01-06-04:00")
    store.handle_output(ok, {"fine": True})
    assert list(tree(tmp_path)) == ["sandbox/values/x/2025-01-06-0400.json"]
