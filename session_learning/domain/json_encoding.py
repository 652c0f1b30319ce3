"""The one JSON encoder of the project: numpy, pandas and datetime values as plain JSON.

Every writer of JSON (model cards, stored asset values, reports, outcome details) encodes
through :func:`dumps`, so a value is written the same way wherever it is stored; each writer
keeps its own layout (indent, key order, whether NaN is allowed).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """The JSON form of a value ``json`` does not know; ``TypeError`` for anything else.

    Datetimes and dates (``pd.Timestamp`` too) become ISO strings, timedeltas ``str()``,
    numpy scalars and arrays numbers and lists, paths strings, sets sorted lists.
    """
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(
        f"value of type {type(value).__name__} cannot be stored as JSON; "
        "convert it to a string, number, list or dict"
    )


def _lenient_default(value: Any) -> Any:
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def dumps(obj: Any, *, lenient: bool = False, **options: Any) -> str:
    """``json.dumps(obj, **options)`` with :func:`json_default`; with ``lenient`` a value it
    does not know is written as its ``str()`` instead of failing (free-form details)."""
    return json.dumps(obj, default=_lenient_default if lenient else json_default, **options)
