"""The files source: a folder of ``<SYMBOL>_<TIMEFRAME>.parquet`` or ``.csv`` files, read with
their time column found by name, and ``write_bars`` that writes that format.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from session_learning.domain.bars import (
    BarDataError,
)
from session_learning.domain.keys import BAR_COLUMNS, ModelKey
from session_learning.resources.market_data.resource import (
    MarketDataError,
    ValidatedMarketDataResource,
)

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
