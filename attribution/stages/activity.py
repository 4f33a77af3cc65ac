"""The raw incidences of the group-level lockstep method: who acted when, on which network.

Pairwise evidence needs only per-account aggregates (``behaviour``), but a group that
acts a few accounts at a time is visible only in the incidences themselves, so the graph
keeps them (``PropertyGraph.activity``) for this run, later re-runs and the API.
"""

from __future__ import annotations

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


def activity(exchanges: pl.DataFrame, ips: pl.DataFrame, proxies: pl.DataFrame) -> pl.DataFrame:
    """The raw incidences the group method reads: (account, minute, network), one row per
    account and minute and network it acted on (minutes since the Unix epoch)."""
    net = network_of(ips, proxies)
    return (
        exchanges.lazy().select("account_id", "ts", "ip").filter(pl.col("ip").is_not_null())
        .join(net.lazy(), on="ip", how="left")
        .select("account_id",
                (pl.col("ts").dt.epoch("s") // 60).cast(pl.Int32).alias("minute"),
                pl.coalesce("network", _prefix(pl.col("ip"))).alias("network"))
        .unique()
        .sort("account_id", "minute", "network")
        .collect()
        .cast(ACTIVITY_SCHEMA)  # type: ignore[arg-type]
    )
