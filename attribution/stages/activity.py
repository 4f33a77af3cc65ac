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
from attribution.stages.codes import coded, ranks

PROXY_PREFIX = "proxy:"  # a network that is a proxy service, not an ASN or a prefix


def network_of(ips: pl.DataFrame, proxies: pl.DataFrame) -> pl.DataFrame:
    """ip -> network: the proxy provider of a known exit (a campaign rotating through
    one provider's exits stays one value), else the ASN, else the /24 (/48 for IPv6)."""
    return ips.join(proxies.select("proxy_id", "provider"), on="proxy_id", how="left").select(
        "ip",
        pl.coalesce(proxy_network(pl.col("provider")),
                    pl.lit("asn:") + pl.col("asn").cast(pl.String), _prefix(pl.col("ip")))
        .alias("network"))


def proxy_network(provider: pl.Expr) -> pl.Expr:
    """The network a proxy provider's exits are named by (``network_of``)."""
    return pl.lit(PROXY_PREFIX) + provider


def _prefix(ip: pl.Expr) -> pl.Expr:
    return (pl.when(ip.str.contains(":"))
            .then(pl.lit("net:") + ip.str.split(":").list.slice(0, 3).list.join(":") + "::/48")
            .otherwise(pl.lit("net:") + ip.str.replace(r"\.\d+$", "") + ".0/24"))


def activity(exchanges: pl.DataFrame, ips: pl.DataFrame, proxies: pl.DataFrame, *,
             rows_per_part: int = 6_000_000) -> pl.DataFrame:
    """The raw incidences the group method reads: (account, minute, network), one row per
    account and minute and network it acted on (minutes since the Unix epoch).

    Accounts and networks are integer codes (in sorted order) while the tens of millions
    of exchange rows are reduced, and names again only for the rows that remain. Each row's
    account and network are looked up by the code of its account and IP
    (:mod:`attribution.stages.codes`), never joined as text. The accounts are taken in
    contiguous ranges of about ``rows_per_part`` exchanges, so the keys of one range at a
    time are in memory, and the ranges, each in order, concatenate in order."""
    exchanges = coded(exchanges)  # (columns are taken one by one: a select would copy them)
    if exchanges.height == 0:
        return pl.DataFrame(schema=ACTIVITY_SCHEMA)
    net = network_of(ips, proxies)
    seen = exchanges.get_column("ip").unique().drop_nulls()
    ip_net = (pl.DataFrame({"code": seen.to_physical(), "ip": seen.cast(pl.String)})
              .join(net, on="ip", how="left")
              .select("code", pl.coalesce("network", _prefix(pl.col("ip"))).alias("network")))
    networks = ip_net.select(pl.col("network").unique().sort()).with_row_index("net")
    ip_net = ip_net.join(networks, on="network")
    # Per row: its IP's network code (-1 without an IP), its account's rank, its minute.
    known = ip_net["code"].to_numpy()
    net_of = np.full(int(known.max(initial=0)) + 1, -1, dtype=np.int32)
    net_of[known] = ip_net["net"].to_numpy()
    ip_code = exchanges.get_column("ip").to_physical()
    row_net = net_of[ip_code.fill_null(0).to_numpy()]
    row_net[ip_code.is_null().to_numpy()] = -1
    del ip_code
    names, row_acc = ranks(exchanges.get_column("account_id"))
    row_minute = (exchanges.get_column("ts").dt.epoch("s") // 60).cast(pl.Int32).to_numpy()
    # (account within its range, minute, net) packed into one Int64 in mixed radix, so
    # that the distinct incidences are one integer unique, already in (acc, minute, net)
    # order. Counting accounts from the range's first keeps the key small: a range holds
    # about ``rows_per_part`` exchanges' accounts, whatever the snapshot's size.
    first = int(row_minute.min())
    span, width = int(row_minute.max()) - first + 1, networks.height
    parts = max(1, -(-exchanges.height // rows_per_part))
    bounds = np.linspace(0, names.len(), parts + 1).astype(np.int64)
    if int(np.diff(bounds).max(initial=0)) * span * width >= 1 << 63:
        raise ValueError("activity: a range's accounts x minutes x networks overflow an Int64 key; "
                         "lower rows_per_part")
    frames = []
    for lo, hi in pairwise(bounds.tolist()):
        if hi == lo:
            continue
        take = (row_acc >= lo) & (row_acc < hi) & (row_net >= 0)
        acc = row_acc[take].astype(np.int64)
        keys = pl.Series(((acc - lo) * span + (row_minute[take] - first)) * width
                         + row_net[take]).unique().sort().to_numpy()
        frames.append(pl.select(
            names.slice(lo, hi - lo).gather(keys // (span * width)).alias("account_id"),
            pl.Series(keys // width % span + first).cast(pl.Int32).alias("minute"),
            networks.get_column("network").gather(keys % width).alias("network"),
        ))
    if not frames:
        return pl.DataFrame(schema=ACTIVITY_SCHEMA)
    return pl.concat(frames).cast(ACTIVITY_SCHEMA)  # type: ignore[arg-type]
