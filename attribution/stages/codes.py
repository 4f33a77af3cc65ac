"""Coded text columns: the exchanges' identifiers as polars Categoricals, and their ranks.

The exchanges are the bulk of a snapshot (tens of millions of rows), and most of their
memory is text: account, IP, device, template, model and capability spelled out in every
row. As Categoricals they are one 32-bit code per row (a quarter of the text or less), and
the aggregates that group or join on them can look the codes up in a table instead of
hashing strings. Codes are polars' own (one process-wide dictionary of the distinct values,
so a re-run of the same accounts adds nothing to it); what the engine computes from them is
always in the order of the text, never of the codes (:func:`ranks`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl


def coded(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every String column as a Categorical (coded columns stay as they are).

    >>> coded(pl.DataFrame({"a": ["x", "y"], "n": [1, 2]})).dtypes
    [Categorical, Int64]
    """
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not text:
        return frame  # as ingest hands the exchanges over; an eager no-op would copy them
    return frame.with_columns(pl.col(text).cast(pl.Categorical))


def ranks(values: pl.Series) -> tuple[pl.Series, npt.NDArray[np.int32]]:
    """The distinct values of a Categorical in sorted text order, and each row's rank among them.

    Equal to ``names = values.cast(String).unique().sort()`` and ``names.search_sorted(row)``
    per row, but the rows are looked up by their code, not compared as text. Rows must not
    be null; ranks are 32-bit (tens of millions of rows, 4 bytes each).

    >>> names, rank = ranks(pl.Series(["b", "a", "b"], dtype=pl.Categorical))
    >>> names.to_list(), rank.tolist()
    (['a', 'b'], [1, 0, 1])
    """
    distinct = values.unique()
    text = distinct.cast(pl.String)
    order = text.arg_sort().to_numpy()
    names = text.gather(order)
    physical = distinct.to_physical().to_numpy()
    lookup = np.zeros(int(physical.max(initial=0)) + 1, dtype=np.int32)
    lookup[physical[order]] = np.arange(len(order), dtype=np.int32)
    return names, lookup[values.to_physical().to_numpy()]
