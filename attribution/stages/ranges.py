"""The exchanges in contiguous ranges of accounts, each account as an integer code.

Every exchange aggregate of the graph stage is per account, so ranges of accounts give
exact results while each pass holds the working copies of one range only. An account's
code is its rank among the sorted ids, computed once for both passes (``behaviour`` and
``activity``): before, each pass hashed or joined every account id of every range (ten
passes over 30M ids at 1M accounts). Ids come back only for the rows that remain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class AccountRanges:
    """Which exchanges belong to which account, and the ranges of accounts to take.

    ``names`` are the distinct account ids in sorted order (an account's code is its
    position), ``code`` the code of each exchange, ``bounds`` the codes where ranges
    start (and the end), ``starts`` each account's first row when the exchanges are
    already in account order (a range is then a slice, no copy), else None.
    """

    names: pl.Series
    code: pl.Series
    bounds: list[int]
    starts: np.ndarray | None

    @classmethod
    def of(cls, exchanges: pl.DataFrame, rows_per_part: int) -> AccountRanges:
        """Ranges of about ``rows_per_part`` exchanges each."""
        ids = exchanges["account_id"]
        if ids.is_sorted():
            # neighbours compared through two views of the ids (a shifted copy of 30M
            # strings would be most of a gigabyte)
            new = pl.concat([pl.Series([True]), ids.slice(1) != ids.slice(0, len(ids) - 1)]) \
                if len(ids) else pl.Series(dtype=pl.Boolean)
            starts: np.ndarray | None = new.arg_true().to_numpy()
            names = ids.filter(new)
            code = (new.cast(pl.UInt32).cum_sum() - 1).alias("code")
        else:
            starts = None
            names = ids.unique().sort()
            code = names.search_sorted(ids).cast(pl.UInt32).alias("code")
        parts = max(1, -(-exchanges.height // rows_per_part))
        rows_before = np.concatenate([[0], np.cumsum(np.bincount(code.to_numpy(),
                                                                 minlength=names.len()))])
        bounds = np.searchsorted(rows_before, np.linspace(0, exchanges.height, parts + 1))
        bounds[0], bounds[-1] = 0, names.len()
        return cls(names=names, code=code, bounds=sorted(set(bounds.tolist())), starts=starts)

    def parts(self, exchanges: pl.DataFrame) -> Iterator[tuple[int, int, pl.DataFrame]]:
        """(first code, end code, the exchanges of those accounts with their ``code``), in
        code order."""
        coded = exchanges.with_columns(self.code)
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            if self.starts is not None:
                first = int(self.starts[lo])
                end = int(self.starts[hi]) if hi < len(self.starts) else exchanges.height
                yield lo, hi, coded.slice(first, end - first)
            else:
                yield lo, hi, coded.filter(pl.col("code").is_between(lo, hi, closed="left"))
