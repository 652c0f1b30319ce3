"""``session-learning import-trades`` on the files real trading systems export: every bad
file gives one line (what is wrong, where, what to do), never a traceback, and writes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from session_learning import cli
from session_learning.cli.demo import _demo_trades_line
from session_learning.domain.keys import TRADE_COLUMNS
from tests.builders import trade


@pytest.fixture
def run(journal, monkeypatch, capsys, tmp_path):
    """Run the command against the test journal; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("SESSION_LEARNING_JOURNAL_URL", journal.url)
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(tmp_path / "home"))

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["import-trades", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _rows(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame([trade(trade_id=f"c{i}") for i in range(n)])


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_column_names_file_line_and_fix(run, journal, tmp_path):
    path = tmp_path / "no_pnl.csv"
    _rows().drop(columns=["pnl"]).to_csv(path, index=False)
    code, _, err = run(str(path))
    line = _one_error_line(err)
    assert code == 2
    assert f"{path} line 1 (header): missing required column(s) pnl" in line
    assert "--map" in line
    assert journal.count_trades() == 0


def test_journal_with_id_instead_of_trade_id_is_one_line_and_a_mapping_fixes_it(
    run, journal, tmp_path
):
    path = tmp_path / "ids.csv"
    _rows().rename(columns={"trade_id": "id"}).to_csv(path, index=False)
    code, _, err = run(str(path))
    assert code == 2 and "missing required column(s) trade_id" in _one_error_line(err)
    code, out, err = run(str(path), "--map", "id=trade_id")
    assert (code, err) == (0, "")
    assert "read: 3, written: 3" in out
    assert journal.count_trades() == 3


def test_a_yaml_mapping_file(run, journal, tmp_path):
    path = tmp_path / "foreign.csv"
    _rows().rename(columns={"trade_id": "Ticket", "pnl": "Profit"}).to_csv(path, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("columns:\n  Ticket: trade_id\n  Profit: pnl\n")
    code, out, _ = run(str(path), "--mapping", str(mapping))
    assert code == 0 and "written: 3" in out
    code, _, err = run(str(path), "--map", "Ticket=tradeid")
    assert code == 2 and "'tradeid' is not a journal column" in _one_error_line(err)


def test_semicolon_separated_file_is_detected(run, journal, tmp_path):
    path = tmp_path / "semicolons.csv"
    _rows().to_csv(path, index=False, sep=";")
    code, out, err = run(str(path))
    assert (code, err) == (0, "")
    assert "written: 3" in out
    assert journal.count_trades() == 3


def test_latin1_file_names_the_line_and_offers_encoding(run, journal, tmp_path):
    path = tmp_path / "latin1.csv"
    rows = _rows().assign(model_version=["v1", "v-é", "v3"])
    rows.to_csv(path, index=False, encoding="latin-1")
    code, _, err = run(str(path))
    line = _one_error_line(err)
    assert code == 2
    assert re.search(
        rf"{re.escape(str(path))} line 3 column \d+: byte 0xe9 is not valid UTF-8", line
    )
    assert "--encoding latin-1" in line
    assert journal.count_trades() == 0  # nothing of the file was written
    code, out, err = run(str(path), "--encoding", "latin-1")
    assert (code, err) == (0, "") and "written: 3" in out
    assert "v-é" in set(
        journal.trades_exited_between(
            pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
        )["model_version"]
    )


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_names_it_and_the_header_to_write(run, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    code, _, err = run(str(path))
    line = _one_error_line(err)
    assert code == 2
    assert f"{path} is empty" in line and ",".join(TRADE_COLUMNS) in line


def test_missing_file_is_one_line(run, tmp_path):
    code, _, err = run(str(tmp_path / "nowhere.csv"))
    assert code == 2 and "nowhere.csv: cannot be read" in _one_error_line(err)


def test_model_version_is_optional(run, journal, tmp_path):
    path = tmp_path / "no_version.csv"
    _rows().drop(columns=["model_version"]).to_csv(path, index=False)
    code, out, err = run(str(path))
    assert (code, err) == (0, "") and "written: 3" in out


def test_bad_values_are_reported_per_line_and_kept(run, journal, tmp_path):
    rows = _rows(4).astype(object)
    rows.loc[1, "pnl"] = "0,0038"
    rows.loc[2, "exit_time"] = "1736141400000"
    path = tmp_path / "values.csv"
    rows.to_csv(path, index=False)
    code, out, err = run(str(path))
    assert (code, err) == (0, "")
    assert f"quarantined: {path} line 3: trade_id 'c1': pnl '0,0038' is not a number" in out
    assert f"quarantined: {path} line 4: trade_id 'c2': exit_time epoch number" in out
    assert journal.count_trades() == 4


def test_a_correction_is_a_conflict_with_exit_code_1_until_applied(run, journal, tmp_path):
    path = tmp_path / "t.csv"
    _rows().to_csv(path, index=False)
    assert run(str(path))[0] == 0
    _rows().assign(confidence=[0.45, 0.8, 0.45]).to_csv(path, index=False)
    code, out, err = run(str(path))
    assert code == 1
    assert f"conflict: {path} line 3: trade_id 'c1' is journaled with other values" in out
    assert "(confidence 0.45 -> 0.8)" in out
    assert "--apply-corrections" in _one_error_line(err)
    code, out, err = run(str(path), "--apply-corrections")
    assert (code, err) == (0, "") and "corrected: 1" in out
    assert len(journal.corrections()) == 1


def test_help_states_the_data_contract(capsys):
    with pytest.raises(SystemExit):
        cli.main(["import-trades", "--help"])
    text = capsys.readouterr().out
    for column in TRADE_COLUMNS:
        assert re.search(rf"^  {column} +(required|optional) ", text, re.M), column
    assert "ISO 8601" in text and "epoch" in text and "0..1" in text and "price units" in text
    assert "exit_time" in text and "--map" in text


def test_readme_has_the_data_contract_with_every_column():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Data contract", 1)[1].split("\n## ", 1)[0]
    for column in TRADE_COLUMNS:
        assert re.search(rf"^\| `{column}` \| (required|optional) \|", section, re.M), column
    for phrase in ("price units", "0..1", "ISO 8601", "UTC", "exit_time", "--map"):
        assert phrase in section, phrase


def test_a_line_with_too_many_fields_is_one_line(run, journal, tmp_path):
    path = tmp_path / "ragged.csv"
    _rows().to_csv(path, index=False)
    with path.open("a") as handle:
        handle.write("c9,EURUSD,30T,long,x,1,x,1,1,1,stop_loss,1,0.5,v,extra\n")
    code, _, err = run(str(path))
    line = _one_error_line(err)
    assert code == 2 and str(path) in line and "line 5" in line and "--delimiter" in line
    assert journal.count_trades() == 0


def test_text_longer_than_its_column_names_the_line_on_every_database(run, journal, tmp_path):
    path = tmp_path / "long.csv"
    _rows().assign(exit_reason=["stop_loss", "x" * 40, "stop_loss"]).to_csv(path, index=False)
    code, _, err = run(str(path))
    line = _one_error_line(err)
    assert code == 2
    assert f"{path} line 3: exit_reason is 40 characters long, the journal keeps at most 32" in line
    assert journal.count_trades() == 0


def test_a_naive_exit_time_is_quarantined_with_its_reason_and_counted(run, journal, tmp_path):
    path = tmp_path / "naive.csv"
    rows = _rows(2)
    rows.loc[1, "exit_time"] = "2025-01-06T05:00:00"  # no UTC offset
    rows.to_csv(path, index=False)
    code, out, err = run(str(path))
    assert (code, err) == (0, "")
    assert "written: 2" in out and "unplaceable: 1" in out
    [line] = [x for x in out.splitlines() if x.startswith("quarantined:")]
    assert "line 3: trade_id 'c1': exit_time naive timestamp without UTC offset" in line
    assert journal.count_trades() == 2  # kept, nothing lost


def test_the_demo_counts_its_trades_by_the_sessions_half_open_rule():
    start, end = pd.Timestamp("2025-01-06T16:00Z"), pd.Timestamp("2025-01-07T00:00Z")
    trades = pd.DataFrame(
        {"exit_time": ["2025-01-06T16:00:00+00:00", "2025-01-06T23:30:00+00:00", end.isoformat()]}
    )
    line = _demo_trades_line(trades, trades, start, end, 2)
    assert line.startswith("3 new demo trades (2 in 2 sessions 2025-01-06 16:00 .. ")
    assert "1 exiting at or after the end belong to later sessions" in line
    assert _demo_trades_line(trades[:2], trades[:2], start, end, 2).endswith("UTC)")
