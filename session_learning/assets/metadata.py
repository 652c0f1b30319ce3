"""Helpers that turn domain results into metadata a person reads in the Dagster UI."""

from __future__ import annotations

import math
import warnings

import dagster as dg
import pandas as pd


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A DataFrame as a Markdown table (first ``max_rows`` rows, with a note when cut)."""
    if frame.empty:
        return dg.MetadataValue.md("_(none)_")
    shown = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |"]
    lines.append("|" + "---|" * len(shown.columns))
    lines += [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)
    ]
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows not shown_")
    return dg.MetadataValue.md("\n".join(lines))


def session_check_spec(
    name: str, asset: dg.AssetKey | str, partitions_def: dg.PartitionsDefinition, **kwargs: object
) -> dg.AssetCheckSpec:
    """An asset check whose results belong to the session partition they judged.

    Without ``partitions_def`` a check on a partitioned asset records its result with no
    partition, so the UI cannot say which session a gate failed for. The argument is a preview
    API in Dagster 1.13; it is used deliberately (tests pin the behaviour: a failed gate stops
    that partition's deployment, and each result carries its partition), and its warning is
    silenced here rather than shown on every load of the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, **kwargs)
