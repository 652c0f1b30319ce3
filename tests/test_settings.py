"""Deployment settings: an explicit market-data source, every variable documented, the Polygon
source's address and page size, and per-model windows and gap limits from one settings file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from session_learning.definitions import build_definitions
from session_learning.domain.keys import ModelKey
from session_learning.resources.market_data import (
    FileMarketDataResource,
    PolygonMarketDataResource,
    SyntheticMarketDataResource,
)
from session_learning.settings import ModelSettings, Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
PG_URL = "postgresql+psycopg2://trader@db.example/journal"
XAU15 = ModelKey("XAUUSD", "15T")
XAU30 = ModelKey("XAUUSD", "30T")
EUR30 = ModelKey("EURUSD", "30T")
MODELS = "XAUUSD:15T,XAUUSD:30T,EURUSD:30T"


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"SESSION_LEARNING_HOME": str(tmp_path), **values}


# --- the market-data source is explicit outside the demo -------------------------------------


def test_the_demo_journal_runs_on_synthetic_bars_without_a_setting(tmp_path):
    resource = build_definitions(Settings.from_env(env(tmp_path))).resources["market_data"]
    assert isinstance(resource, SyntheticMarketDataResource)


def test_an_own_journal_without_a_source_refuses_to_load_with_the_fix(tmp_path):
    settings = Settings.from_env(env(tmp_path, SESSION_LEARNING_JOURNAL_URL=PG_URL))
    with pytest.raises(SettingsError) as info:
        build_definitions(settings)
    message = str(info.value)
    assert "SESSION_LEARNING_MARKET_DATA is not set" in message
    assert "refusing to train, gate and signal on synthetic bars" in message
    assert "SESSION_LEARNING_MARKET_DATA=files:/path/to/bars" in message
    assert "SESSION_LEARNING_MARKET_DATA=polygon" in message and "POLYGON_API_KEY" in message


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("synthetic", SyntheticMarketDataResource),  # chosen on purpose: allowed
        ("files:/srv/bars", FileMarketDataResource),
        ("polygon", PolygonMarketDataResource),
    ],
)
def test_an_own_journal_with_a_chosen_source_loads(tmp_path, source, kind):
    values = env(tmp_path, SESSION_LEARNING_JOURNAL_URL=PG_URL, SESSION_LEARNING_MARKET_DATA=source)
    resource = build_definitions(Settings.from_env(values)).resources["market_data"]
    assert type(resource) is kind


@pytest.mark.parametrize("source", ["files:", "ftp://bars", "Polygon"])
def test_an_unusable_source_is_refused_with_the_choices(tmp_path, source):
    with pytest.raises(SettingsError, match="use synthetic, files:<folder> or polygon"):
        build_definitions(Settings.from_env(env(tmp_path, SESSION_LEARNING_MARKET_DATA=source)))


def test_the_code_location_refuses_to_load_as_dagster_loads_it(tmp_path):
    """The real loader (``dagster definitions validate``, what the webserver and the daemon
    do) fails with the message, instead of starting on synthetic bars."""
    child = {
        k: v for k, v in os.environ.items() if not k.startswith(("SESSION_LEARNING_", "POLYGON"))
    }
    child.update(
        SESSION_LEARNING_HOME=str(tmp_path / "home"),
        SESSION_LEARNING_JOURNAL_URL=PG_URL,
        DAGSTER_HOME=str(tmp_path),
    )
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-m",
            "session_learning.definitions",
            "-a",
            "defs",
        ],
        cwd=REPO,
        env=child,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "SESSION_LEARNING_MARKET_DATA is not set" in done.stdout + done.stderr


# --- Polygon's address and page size ----------------------------------------------------------


def test_polygon_base_url_and_page_size_come_from_the_environment(tmp_path):
    values = env(
        tmp_path,
        SESSION_LEARNING_MARKET_DATA="polygon",
        SESSION_LEARNING_POLYGON_BASE_URL="http://127.0.0.1:8999/polygon",
        SESSION_LEARNING_POLYGON_PAGE_SIZE="20000",
    )
    resource = build_definitions(Settings.from_env(values)).resources["market_data"]
    assert resource.base_url == "http://127.0.0.1:8999/polygon"
    assert resource.page_size == 20000
    assert isinstance(resource.api_key, dg.EnvVar) and resource.api_key == "POLYGON_API_KEY"
    plain = build_definitions(
        Settings.from_env(env(tmp_path, SESSION_LEARNING_MARKET_DATA="polygon"))
    )
    assert plain.resources["market_data"].base_url == "https://api.polygon.io"
    assert plain.resources["market_data"].page_size == 50_000


def test_a_page_size_that_is_not_a_number_is_refused(tmp_path):
    values = env(tmp_path, SESSION_LEARNING_POLYGON_PAGE_SIZE="lots")
    with pytest.raises(SettingsError, match="SESSION_LEARNING_POLYGON_PAGE_SIZE='lots'"):
        Settings.from_env(values)


# --- every setting is documented ---------------------------------------------------------------


def configuration_table() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `"))


def test_every_environment_variable_the_code_reads_is_in_the_readme_table():
    names = set()
    for path in (REPO / "session_learning").rglob("*.py"):
        names |= set(
            re.findall(r"\b(?:SESSION_LEARNING_[A-Z_]+|POLYGON_API_KEY)\b", path.read_text())
        )
    names = {name for name in names if not name.endswith("_")}  # prefixes in prose
    assert {"SESSION_LEARNING_MARKET_DATA", "POLYGON_API_KEY", "SESSION_LEARNING_SETTINGS"} <= names
    table = configuration_table()
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert not missing, f"not in the README configuration table: {missing}"


# --- per-model settings in one file --------------------------------------------------------------

SETTINGS_FILE = """\
defaults:
  warmup_bars: 250
  max_gap_hours: 30
timeframes:
  15T: {validation_bars: 1200, training_bars: 3000}
symbols:
  XAUUSD: {max_gap_hours: 72}
models:
  XAUUSD_15T: {training_bars: 2500, max_gap_hours: null}
"""


@pytest.fixture
def settings_file(tmp_path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(SETTINGS_FILE)
    return path


def with_file(tmp_path: Path, path: Path, **values: str) -> Settings:
    return Settings.from_env(
        env(tmp_path, SESSION_LEARNING_MODELS=MODELS, SESSION_LEARNING_SETTINGS=str(path), **values)
    )


def test_the_more_specific_layer_wins(tmp_path, settings_file):
    settings = with_file(tmp_path, settings_file)
    assert settings.model(XAU15) == ModelSettings(
        training_bars=2500, validation_bars=1200, warmup_bars=250, max_gap_hours=None
    )
    assert settings.model(XAU30) == ModelSettings(
        training_bars=6000, validation_bars=2000, warmup_bars=250, max_gap_hours=72.0
    )
    assert settings.model(EUR30) == ModelSettings(
        training_bars=6000, validation_bars=2000, warmup_bars=250, max_gap_hours=30.0
    )
    assert settings.timeframe_defaults("15T") == ModelSettings(3000, 1200, 250, 30.0)
    assert settings.model_settings.origin(XAU15, "max_gap_hours") == "model"
    assert settings.model_settings.origin(XAU30, "max_gap_hours") == "symbol XAUUSD"
    assert settings.model_settings.origin(XAU15, "validation_bars") == "timeframe 15T"
    assert settings.model_settings.origin(EUR30, "training_bars") == "default"


def test_without_a_file_the_code_defaults_apply(tmp_path):
    settings = Settings.from_env(env(tmp_path))
    assert settings.model(XAU15) == ModelSettings(6000, 3000, 300, 24.0)
    defs = build_definitions(settings)
    learning = defs.resources["learning_settings"]
    assert learning.model_windows == {}
    assert learning.learning_config(XAU15) == learning.learning_config()
    # The resources' own defaults are the ones status prints.
    config = learning.learning_config(XAU15)
    assert (config.training_bars, config.validation_for("15T"), config.warmup_bars) == (
        6000,
        3000,
        300,
    )
    files = build_definitions(replace(settings, market_data="files:/srv/bars"))
    assert files.resources["market_data"].max_gap_hours_of(XAU15) == 24.0


@pytest.mark.parametrize("source", ["files:/srv/bars", "polygon"])
def test_the_resources_carry_each_models_settings(tmp_path, settings_file, source):
    settings = with_file(tmp_path, settings_file, SESSION_LEARNING_MARKET_DATA=source)
    defs = build_definitions(settings)
    learning = defs.resources["learning_settings"]
    market = defs.resources["market_data"]
    for key in (XAU15, XAU30, EUR30):
        config = learning.learning_config(key)
        expected = settings.model(key)
        assert config.training_bars == expected.training_bars
        assert config.validation_for(key.timeframe) == expected.validation_bars
        assert config.warmup_bars == expected.warmup_bars
        assert market.max_gap_hours_of(key) == expected.max_gap_hours
        assert config.history_bars(key.timeframe) == expected.history_bars(key.timeframe)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  XAUUSD_5T: {training_bars: 10}\n", "models.XAUUSD_5T is not one of"),
        ("symbols:\n  GBPUSD: {max_gap_hours: 10}\n", "symbols.GBPUSD is not one of"),
        ("timeframes:\n  1H: {warmup_bars: 10}\n", "timeframes.1H is not one of"),
        ("defaults:\n  max_gap: 48\n", "defaults.max_gap is not a setting of the file"),
        ("defaults:\n  training_bars: 1.5\n", "defaults.training_bars is 1.5"),
        ("models:\n  EURUSD_30T: {validation_bars: 0}\n", "validation_bars is 0"),
        ("defaults:\n  max_gap_hours: -1\n", "max_gap_hours is -1"),
        ("model:\n  EURUSD_30T: {}\n", "unknown section(s) model"),
        ("defaults: [1, 2]\n", "defaults must be a mapping"),
        ("defaults: {training_bars: [\n", "not valid YAML"),
    ],
)
def test_a_settings_file_mistake_stops_the_load_and_names_it(tmp_path, text, expected):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        with_file(tmp_path, path)
    assert f"SESSION_LEARNING_SETTINGS={path}" in str(info.value)
    assert expected in str(info.value)


def test_a_missing_settings_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="cannot read it"):
        with_file(tmp_path, tmp_path / "nowhere.yaml")


def test_a_learning_run_uses_the_models_windows_from_the_file(tmp_path):
    """The settings file reaches the training set of a real run: the model's own training and
    validation windows, with nothing restated in run config."""
    path = tmp_path / "settings.yaml"
    path.write_text(
        "defaults: {warmup_bars: 250}\n"
        "models:\n  EURUSD_30T: {training_bars: 900, validation_bars: 400}\n"
    )
    settings = Settings.from_env(
        env(tmp_path, SESSION_LEARNING_MODELS="EURUSD:30T", SESSION_LEARNING_SETTINGS=str(path))
    )
    defs = build_definitions(settings)
    job = defs.resolve_job_def("session_learning_job")
    result = job.execute_in_process(
        partition_key="2025-03-04-08:00",
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[
            dg.AssetKey("session_trades"),
            dg.AssetKey("problem_report"),
            dg.AssetKey(["EURUSD_30T", "weighted_training_set"]),
        ],
    )
    assert result.success
    [materialization] = [
        m for m in result.asset_materializations_for_node("EURUSD_30T__weighted_training_set")
    ]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["validation_rows"] == 400
    assert 800 <= metadata["training_rows"] <= 900


# --- status prints what is in force -------------------------------------------------------------


def test_status_prints_the_effective_settings_per_timeframe(
    tmp_path, settings_file, monkeypatch, capsys
):
    from session_learning.cli import main

    for name, value in env(
        tmp_path, SESSION_LEARNING_MODELS=MODELS, SESSION_LEARNING_SETTINGS=str(settings_file)
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SESSION_LEARNING_JOURNAL_URL", raising=False)
    monkeypatch.delenv("SESSION_LEARNING_MARKET_DATA", raising=False)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    settings = Settings.from_env()
    loads = {key.slug: settings.model(key).history_bars(key.timeframe) for key in (XAU15, XAU30)}
    assert f"settings: SESSION_LEARNING_SETTINGS={settings_file}" in out
    assert "  market data: synthetic" in out
    assert "  15T models: training 3000, validation 1200, warm-up 250 bars, max gap 30h" in out
    assert "  30T models: training 6000, validation 2000, warm-up 250 bars, max gap 30h" in out
    assert (
        f"    XAUUSD_15T: training 2500, validation 1200, warm-up 250 bars, max gap none; "
        f"a learning step loads {loads['XAUUSD_15T']} bars; own: training_bars (model), "
        "max_gap_hours (model)"
    ) in out
    assert "    XAUUSD_30T: " in out and "own: max_gap_hours (symbol XAUUSD)" in out
    assert "EURUSD_30T:" not in out.split("settings:")[1]  # nothing of its own


def test_status_says_when_the_source_is_not_chosen(tmp_path, monkeypatch, capsys):
    from session_learning.cli import main

    journal = tmp_path / "own.sqlite"
    for name, value in env(tmp_path, SESSION_LEARNING_JOURNAL_URL=f"sqlite:///{journal}").items():
        monkeypatch.setenv(name, value)
    for name in ("SESSION_LEARNING_MARKET_DATA", "SESSION_LEARNING_SETTINGS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "settings: code defaults (SESSION_LEARNING_SETTINGS unset)" in out
    assert "  market data: NOT CHOSEN: SESSION_LEARNING_MARKET_DATA is not set" in out
    assert "  15T models: training 6000, validation 3000, warm-up 300 bars, max gap 24h" in out


def test_a_symbol_without_a_spread_is_refused_when_the_settings_load():
    env = {"SESSION_LEARNING_MODELS": "EURUSD:30T,FOOBAR:30T"}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert "\n" not in message and "no spread configured for FOOBAR" in message
    assert "SESSION_LEARNING_SPREADS=FOOBAR:" in message

    settings = Settings.from_env({**env, "SESSION_LEARNING_SPREADS": "foobar:0.0002"})
    from session_learning.definitions import build_resources

    learning = build_resources(settings)["learning_settings"]
    assert learning.costs("FOOBAR").spread == 0.0002
    assert learning.costs("EURUSD").spread == 0.00008  # the defaults stay
    with pytest.raises(SettingsError, match="SESSION_LEARNING_SPREADS entry 'FOOBAR'"):
        Settings.from_env({**env, "SESSION_LEARNING_SPREADS": "FOOBAR"})
