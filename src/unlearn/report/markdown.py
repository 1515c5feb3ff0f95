"""Markdown building blocks shared by every report: mean ± std over seeds and GitHub tables."""

from __future__ import annotations

import numpy as np

from unlearn.errors import UnlearnError

MISSING = "–"
Stats = dict[str, float]


def summarize(values: list[float]) -> Stats:
    """Mean and population std (ddof=0) of one metric over seeds; one value gives std 0.

    ddof=0 keeps a single reference run well defined (std 0 instead of NaN).
    """
    if len(values) == 0:
        raise UnlearnError("summarize needs at least one value, got an empty list")
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std())}


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A GitHub Markdown table: the first `text_columns` columns left-aligned, the numbers right-aligned."""
    align = [":---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def slug(row: str) -> str:
    """A file-name-safe form of a report row name (plots and edits of a method are named by it)."""
    return "".join(c if c.isalnum() else "_" for c in row).lower()
