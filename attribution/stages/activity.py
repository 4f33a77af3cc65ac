"""The raw incidences of the group-level lockstep method: who acted when, on which network.

Pairwise evidence needs only per-account aggregates (``behaviour``), but a group that
acts a few accounts at a time is visible only in the incidences themselves, so the graph
keeps them (``PropertyGraph.activity``) for this run, later re-runs and the API.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import polars as pl

from attribution.contracts.graph import ACTIVITY_SCHEMA


def network_of(ips: pl.DataFrame, proxies: pl.DataFrame) -> pl.DataFrame:
    """ip -> network: the proxy provider of a known exit (a campaign rotating through
    one provider's exits stays one value), else the ASN, else the /24 (/48 for IPv6)."""
    return ips.join(proxies.select("proxy_id", "provider"), on="proxy_id", how="left").select(
        "ip",
        pl.coalesce(pl.lit("proxy:") + pl.col("provider"),
                    pl.lit("asn:") + pl.col("asn").cast(pl.String), _prefix(pl.col("ip")))
        .alias("network"))


def _prefix(ip: pl.Expr) -> pl.Expr:
    return (pl.when(ip.str.contains(":"))
            .then(pl.lit("net:") + ip.str.split(":").list.slice(0, 3).list.join(":") + "::/48")
            .otherwise(pl.lit("net:") + ip.str.replace(r"\.\d+$", "") + ".0/24"))


def activity(exchanges: pl.DataFrame, ips: pl.DataFrame, proxies: pl.DataFrame, *,
             rows_per_part: int = 6_000_000) -> pl.DataFrame:
    """The raw incidences the group method reads: (account, minute, network), one row per
    account and minute and network it acted on (minutes since the Unix epoch).

    Accounts and networks are integer codes (in sorted order) while the tens of millions
    of exchange rows are reduced, and names again only for the rows that remain. The
    accounts are taken in contiguous ranges of about ``rows_per_part`` exchanges, so the
    working copies of one range at a time are in memory (about 2 GB for 30M exchanges in
    one pass) and the ranges, each in order, concatenate in order."""
    net = network_of(ips, proxies)
    ip_net = (exchanges.select(pl.col("ip").unique()).drop_nulls().join(net, on="ip", how="left")
              .select("ip", pl.coalesce("network", _prefix(pl.col("ip"))).alias("network")))
    networks = ip_net.select(pl.col("network").unique().sort()).with_row_index("net")
    ip_net = ip_net.join(networks, on="network").select("ip", "net")
    accounts = exchanges.select(pl.col("account_id").unique().sort()).with_row_index("acc")
    # (account within its range, minute, net) packed into one Int64 in mixed radix, so
    # that the distinct incidences are one integer unique, already in (acc, minute, net)
    # order. Counting accounts from the range's first keeps the key small: a range holds
    # about ``rows_per_part`` exchanges' accounts, whatever the snapshot's size.
    minute = (pl.col("ts").dt.epoch("s") // 60).cast(pl.Int32)
    first, last = exchanges.select(minute.min(), minute.max().alias("last")).row(0)
    first = first or 0
    span, width = (last or 0) - first + 1, networks.height
    parts = max(1, -(-exchanges.height // rows_per_part))
    bounds = np.linspace(0, accounts.height, parts + 1).astype(np.int64)
    if int(np.diff(bounds).max(initial=0)) * span * width >= 1 << 63:
        raise ValueError("activity: a range's accounts x minutes x networks overflow an Int64 key; "
                         "lower rows_per_part")
    frames = []
    for lo, hi in pairwise(bounds.tolist()):
        if hi == lo:
            continue
        key = ((pl.col("acc").cast(pl.Int64) - lo) * span + (minute - first)) * width + pl.col("net")
        chunk = accounts.slice(lo, hi - lo)
        ids = chunk.get_column("account_id")
        # The range's ids are contiguous in sorted order: two string comparisons per
        # exchange select its rows, so only those rows are hashed by the join.
        keys = (
            exchanges.lazy().select("account_id", "ts", "ip")
            .filter(pl.col("ip").is_not_null()
                    & pl.col("account_id").is_between(pl.lit(ids[0]), pl.lit(ids[-1])))
            .join(chunk.lazy(), on="account_id").join(ip_net.lazy(), on="ip")
            .select(key.alias("key"))
            .collect().to_series().unique().sort()
        )
        frames.append(pl.select(
            ids.gather(keys // (span * width)).alias("account_id"),
            (keys // width % span + first).cast(pl.Int32).alias("minute"),
            networks.get_column("network").gather(keys % width).alias("network"),
        ))
    if not frames:
        return pl.DataFrame(schema=ACTIVITY_SCHEMA)
    return pl.concat(frames).cast(ACTIVITY_SCHEMA)  # type: ignore[arg-type]
