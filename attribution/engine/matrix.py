"""Fixed-width list columns as numpy matrices (signatures, histograms)."""

from __future__ import annotations

import numpy as np
import polars as pl


def list_matrix(col: pl.Series, width: int, fill: int) -> np.ndarray:
    """A list column of fixed width as a 2-D array, ``fill`` for missing rows."""
    blank = pl.lit([fill] * width, dtype=pl.List(pl.Int64))
    full = pl.select(pl.when(col.is_null()).then(blank).otherwise(col.cast(pl.List(pl.Int64))))
    return full.to_series().list.to_array(width).to_numpy()
