"""Per-account traits that sybil operations show and honest users rarely do.

Shared by link inference (to tell a campaign's template from a popular one by
who uses it) and by the sybil score. All shares are judged against the
population's own baseline, so a world where many people use VPNs or write
code does not look suspicious as a whole.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.engine.matrix import list_matrix


def ratio(num: object, den: object) -> float:
    n = float(num) if isinstance(num, int | float) else 0.0
    d = float(den) if isinstance(den, int | float) else 0.0
    return n / d if d > 0 else 0.0


def excess(share: pl.Expr, baseline: float) -> pl.Expr:
    """How far a share stands above the population's, on a 0..1 scale."""
    return ((share - baseline) / max(1.0 - baseline, 1e-9)).clip(0.0, 1.0)


# A client that declares itself a program (an SDK, an HTTP library, a headless
# browser, a server platform) runs where programs run: on hosting ranges.
SERVER_PLATFORMS = ("server",)
SERVER_AGENT = r"(?i)headless|sdk[-/]|httpx|python-requests|curl/|go-http-client|aiohttp|axios"


def server_share(graph: PropertyGraph) -> pl.DataFrame:
    """Per account, the share of its device sessions on a declared program client."""
    dev = graph.devices.select(
        pl.col("device_id").alias("entity_id"),
        (pl.col("platform").fill_null("").str.to_lowercase().is_in(list(SERVER_PLATFORMS))
         | pl.col("user_agent").fill_null("").str.contains(SERVER_AGENT)).alias("server"),
    )
    return graph.uses.filter(pl.col("kind") == "device").join(dev, on="entity_id").group_by(
        "account_id").agg(
        ((pl.col("count").clip(1) * pl.col("server")).sum() / pl.col("count").clip(1).sum())
        .alias("server_share"))


def account_features(graph: PropertyGraph, zones: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per-account inputs of the fleet features (one row per account).

    ``zones`` is ``account_zones`` of the graph when the caller has it already (the
    lockstep step reads it first); otherwise it is computed here.

    ``rented_req`` counts the requests that hide where the account is: through
    a known proxy or VPN exit, or from hosting ranges by a client that is not
    a program. A company's own servers (an SDK or headless client on its cloud
    boxes) are where such a client is expected to run, and hide nothing; a
    browser or phone app whose traffic comes out of a datacenter does.
    """
    acc = graph.accounts
    ips = graph.ips.select(
        pl.col("ip").alias("entity_id"),
        pl.col("proxy_id").is_not_null().alias("proxy"),
        pl.col("hosting").fill_null(False).alias("hosting"),
        pl.col("country").alias("ip_country"),
    )
    # An account with no traffic yet is judged by the network it signed up from.
    traffic = graph.uses.filter(pl.col("kind") == "ip")
    signup = graph.uses.filter(pl.col("kind") == "signup_ip").join(
        traffic.select("account_id").unique(), on="account_id", how="anti")
    program = server_share(graph)
    ip_use = pl.concat([traffic, signup]).join(ips, on="entity_id", how="left").join(
        program, on="account_id", how="left").with_columns(
        (pl.col("proxy").fill_null(False).cast(pl.Float64)
         + (~pl.col("proxy").fill_null(False) & pl.col("hosting").fill_null(False)).cast(
            pl.Float64) * (1.0 - pl.col("server_share").fill_null(0.0))).alias("rented"))
    infra = ip_use.group_by("account_id").agg(
        (pl.col("count") * pl.col("rented").fill_null(0.0)).sum().alias("rented_req"),
        pl.col("count").sum().alias("ip_req"),
        pl.col("ip_country").drop_nulls().mode().sort().first().alias("ip_country"),
    )
    tz = zones if zones is not None else account_zones(graph.uses, graph.devices)
    caps = list_matrix(acc["capabilities"], 6, 0).astype(np.float64)
    total = caps.sum(axis=1)
    harvest = caps[:, :3].sum(axis=1)
    org_domains = graph.known_links.filter(pl.col("kind") == "email_domain")["key"].unique()
    out = acc.select(
        "account_id",
        "exchanges",
        pl.col("email_domain").is_in(org_domains.implode()).fill_null(False).alias("institutional"),
        pl.col("plan").fill_null(""),
        pl.col("org_claim").str.strip_chars().str.to_lowercase().alias("claim"),
        pl.col("country"),
    ).with_columns(
        pl.Series("harvest_ex", harvest), pl.Series("cap_total", total)
    ).join(infra, on="account_id", how="left").join(tz, on="account_id", how="left")
    out = out.with_columns(pl.coalesce("country", "ip_country").alias("home"))
    # Time zone leak: a device time zone rare among accounts of the same home country.
    tz_share = (
        out.filter(pl.col("timezone").is_not_null() & pl.col("home").is_not_null())
        .group_by("home", "timezone").agg(pl.len().alias("c"))
        .with_columns((pl.col("c") / pl.col("c").sum().over("home")).alias("tz_share"))
    )
    out = out.join(tz_share.select("home", "timezone", "tz_share"), on=["home", "timezone"],
                   how="left")
    return out.with_columns(
        pl.col("plan").is_in(["team", "api"]).alias("team_plan"),
        (pl.col("claim").is_null() & pl.col("plan").is_in(["", "free", "pro"])).alias("unclaimed"),
        (pl.col("tz_share").fill_null(1.0) < 0.05).cast(pl.Float64).alias("tz_leak"),
        (pl.col("rented_req").fill_null(0) / pl.col("ip_req").fill_null(0).clip(1)).alias("infra"),
    ).drop("tz_share", "ip_country")


def account_zones(uses: pl.DataFrame, devices: pl.DataFrame) -> pl.DataFrame:
    """account_id -> timezone: the zone of the devices an account used most (ties: the
    first zone by name); accounts with no device zone are absent."""
    dev = uses.filter(pl.col("kind") == "device").join(
        devices.select(pl.col("device_id").alias("entity_id"), "timezone"), on="entity_id"
    ).filter(pl.col("timezone").is_not_null())
    return (dev.group_by("account_id", "timezone").agg(pl.col("count").sum())
            .sort("count", "timezone", descending=[True, False])
            .group_by("account_id", maintain_order=True).first()
            .select("account_id", "timezone"))


def anomaly(feats: pl.DataFrame) -> pl.Series:
    """One 0..1 number per account: rented network, foreign time zone, harvesting mix."""
    pop_infra = ratio(feats["rented_req"].fill_null(0).sum(), feats["ip_req"].fill_null(0).sum())
    pop_harvest = ratio(feats["harvest_ex"].sum(), feats["cap_total"].sum())
    return feats.select(
        (
            (
                excess(pl.col("infra").fill_null(0.0), pop_infra)
                + pl.col("tz_leak").fill_null(0.0)
                + excess(pl.col("harvest_ex") / pl.col("cap_total").clip(1), pop_harvest)
            )
            / 3.0
        ).alias("anomaly")
    ).to_series()
