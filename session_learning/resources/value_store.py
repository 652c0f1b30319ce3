"""An IO manager that stores asset values as Parquet (frames) and JSON (dicts), never pickle.

Values are readable outside Dagster: ``<base_dir>/<asset key path>/<partition>.parquet``.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.domain.atomic import write_atomic
from session_learning.domain.json_encoding import dumps as json_dumps

_FRAME_MARK = "__parquet__"


def dumps(value: object) -> str:
    """JSON with infinities allowed (profit factor without losers) and numpy scalars unwrapped."""
    return json_dumps(value, indent=1, sort_keys=True, allow_nan=True)


def _file_name(part: str, what: str) -> str:
    # Asset key parts and partition keys become path components; a dynamic partition key can
    # come from outside the code, so nothing that names another folder is accepted.
    if part in ("", ".", "..") or any(c in part for c in "/\\\0"):
        raise ValueError(
            f"{what} {part!r} cannot be a file name under the value store's base_dir "
            "(empty, '.', '..', or holds a path separator or NUL)"
        )
    return part


def _atomic_write(path: Path, write) -> None:
    # Values are re-materialized after a crash, so they are not fsynced (the registry is).
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, write, fsync=False)


class ValueStoreIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames as Parquet and dicts/lists as JSON under ``base_dir``."""

    base_dir: str = Field(description="Folder that holds the stored asset values.")

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        key = [_file_name(part, "asset key part") for part in context.asset_key.path]
        name = (
            _file_name(context.asset_partition_key.replace(":", ""), "partition key")
            if context.has_asset_partitions
            else "value"
        )
        return Path(self.base_dir, *key, f"{name}{suffix}")

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        if isinstance(obj, pd.DataFrame):
            path = self._path(context, ".parquet")
            _atomic_write(path, lambda fh: obj.to_parquet(fh))
        elif isinstance(obj, dict):
            # DataFrames inside a dict go to sibling Parquet files; the JSON names them.
            path = self._path(context, ".json")
            plain = {}
            for key, value in obj.items():
                if isinstance(value, pd.DataFrame):
                    part = path.with_name(f"{path.stem}.{key}.parquet")
                    _atomic_write(part, lambda fh, v=value: v.to_parquet(fh))
                    plain[key] = {_FRAME_MARK: part.name}
                else:
                    plain[key] = value
            text = dumps(plain)
            _atomic_write(path, lambda fh: fh.write(text.encode()))
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "this store keeps DataFrames and JSON-able dicts only"
            )
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> object:
        frame_path = self._path(context, ".parquet")
        if frame_path.exists():
            return pd.read_parquet(frame_path)
        path = self._path(context, ".json")
        if path.exists():
            value = json.loads(path.read_text())  # Infinity/NaN parse back as floats
            for key, item in value.items():
                if isinstance(item, dict) and set(item) == {_FRAME_MARK}:
                    value[key] = pd.read_parquet(path.with_name(item[_FRAME_MARK]))
            return value
        raise FileNotFoundError(
            f"no stored value for {context.asset_key.to_user_string()} "
            f"partition {context.asset_partition_key if context.has_asset_partitions else '-'} "
            f"under {self.base_dir}: materialize it first"
        )
