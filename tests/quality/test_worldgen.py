"""The fixture-world generator: determinism, contract validity, planted tactics, cuts.

Worlds here are small (a few thousand accounts) so the whole file runs in seconds.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from attribution.contracts.schema import CAPABILITIES, LOAD_ORDER, TABLES
from fixtures.worldgen import WorldgenError, WorldInfo, generate_world, main

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample"
T0 = pl.datetime(2026, 1, 5, time_zone="UTC")
DTYPES = {
    "str": (pl.String,),
    "ip": (pl.String,),
    "int": (pl.Int64, pl.Int32),
    "float": (pl.Float64,),
    "bool": (pl.Boolean,),
    "ts": (pl.Datetime,),
}


def load(snapshot: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(snapshot / f"{name}.parquet") for name in LOAD_ORDER}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldInfo, dict[str, pl.DataFrame]]:
    info = generate_world(tmp_path_factory.mktemp("w") / "world", accounts=4000, seed=11)
    return info, load(info.snapshot)


@pytest.fixture(scope="module")
def truth(world: tuple[WorldInfo, dict[str, pl.DataFrame]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    info, _ = world
    return (pl.read_parquet(info.truth / "labels.parquet"),
            pl.read_parquet(info.truth / "groups.parquet"))


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = generate_world(tmp_path / "a", accounts=2000, seed=3)
    b = generate_world(tmp_path / "b", accounts=2000, seed=3)
    files = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    for f in files:
        assert (a.out / f).read_bytes() == (b.out / f).read_bytes(), f
    c = generate_world(tmp_path / "c", accounts=2000, seed=4)
    assert (c.snapshot / "accounts.parquet").read_bytes() != (a.snapshot / "accounts.parquet").read_bytes()


def test_schema_keys_and_types(world: tuple[WorldInfo, dict[str, pl.DataFrame]]) -> None:
    info, t = world
    assert sorted(p.name for p in info.snapshot.iterdir()) == sorted(f"{n}.parquet" for n in LOAD_ORDER)
    for name, table in TABLES.items():
        df = t[name]
        assert df.columns == table.column_names, name
        assert df.height > 0, name
        for col in table.columns:
            assert isinstance(df[col.name].dtype, DTYPES[col.kind]), (name, col.name, df[col.name].dtype)
            if not col.nullable:
                assert df[col.name].null_count() == 0, (name, col.name)
            if col.choices:
                assert set(df[col.name].drop_nulls().unique()) <= set(col.choices), (name, col.name)
        if table.key:
            assert df.select(table.key).is_duplicated().sum() == 0, name
        for c in df.columns:
            if isinstance(df[c].dtype, pl.Datetime):
                assert df[c].dtype.time_zone == "UTC"
    assert set(t["exchanges"]["capability"].drop_nulls().unique()) <= set(CAPABILITIES)
    assert t["accounts"]["email"].is_duplicated().sum() == 0
    assert info.counts == {n: t[n].height for n in LOAD_ORDER}


def test_referential_integrity(world: tuple[WorldInfo, dict[str, pl.DataFrame]]) -> None:
    _, t = world
    acc = set(t["accounts"]["account_id"])
    for name in ("account_payments", "account_devices", "account_ips", "exchanges"):
        assert set(t[name]["account_id"]) <= acc, name
    assert set(t["account_payments"]["payment_method_id"]) == set(t["payment_methods"]["payment_method_id"])
    assert set(t["account_devices"]["device_id"]) == set(t["devices"]["device_id"])
    assert set(t["exchanges"]["device_id"].drop_nulls()) <= set(t["devices"]["device_id"])
    assert set(t["ips"]["proxy_id"].drop_nulls()) <= set(t["proxies"]["proxy_id"])
    assert set(t["known_links"]["org_id"]) <= set(t["organizations"]["org_id"])
    ips = set(t["ips"]["ip"])
    used = (set(t["account_ips"]["ip"]) | set(t["exchanges"]["ip"].drop_nulls())
            | set(t["accounts"]["signup_ip"].drop_nulls()))
    assert used <= ips
    assert t["ips"].select("asn", "as_org", "country", "hosting").null_count().row(0) == (0, 0, 0, 0)
    for ip in t["ips"]["ip"]:
        assert str(ipaddress.ip_address(ip)) == ip  # canonical text
    # every account of a payment row has a created_at before the card was added
    ap = t["account_payments"].join(t["accounts"], on="account_id")
    assert (ap["first_seen"] >= ap["created_at"]).all()
    assert (ap["first_seen"] <= ap["last_seen"]).all()


def test_aggregates_match_exchanges(world: tuple[WorldInfo, dict[str, pl.DataFrame]]) -> None:
    info, t = world
    x = t["exchanges"]
    assert x["ts"].min() >= pl.select(T0).item()
    cut = pl.select(T0 + pl.duration(days=info.as_of_day)).item()
    assert x["ts"].max() < cut and t["accounts"]["created_at"].max() < cut
    assert x.select("account_id", "ts").is_duplicated().sum() < x.height * 0.001
    assert x.equals(x.sort("account_id", "ts", maintain_order=True))
    ai = (x.drop_nulls("ip").group_by("account_id", "ip")
          .agg(first_seen=pl.col("ts").min(), last_seen=pl.col("ts").max(), requests=pl.len())
          .with_columns(pl.col("requests").cast(pl.Int64)).sort("account_id", "ip"))
    assert_frame_equal(t["account_ips"], ai)
    ad = (x.drop_nulls("device_id").group_by("account_id", "device_id")
          .agg(first_seen=pl.col("ts").min(), last_seen=pl.col("ts").max(), n=pl.len())
          .sort("account_id", "device_id"))
    got = t["account_devices"].join(ad, on=["account_id", "device_id"], how="full", coalesce=True)
    assert got.height == ad.height == t["account_devices"].height
    assert (got["first_seen"] == got["first_seen_right"]).all()
    assert (got["last_seen"] == got["last_seen_right"]).all()
    assert ((got["sessions"] >= 1) & (got["sessions"] <= got["n"])).all()
    created = x.join(t["accounts"], on="account_id")
    assert (created["ts"] >= created["created_at"]).all()


def test_known_links_formats(world: tuple[WorldInfo, dict[str, pl.DataFrame]]) -> None:
    _, t = world
    kl = t["known_links"]
    for et, ids in kl.group_by("entity_type").agg("entity_id").iter_rows():
        ids = list(ids)
        if et == "asn":
            assert all(i.isdigit() for i in ids)
            assert {int(i) for i in ids} & set(t["ips"]["asn"])  # some are seen in the snapshot
        elif et == "email_domain":
            assert all(i == i.lower() and "@" not in i for i in ids)
        elif et == "account":
            assert set(ids) <= set(t["accounts"]["account_id"])
        elif et == "ip":
            assert all(ipaddress.ip_address(i) for i in ids)
    c = kl["confidence"].drop_nulls()
    assert ((c > 0) & (c <= 1)).all()
    assert {"asn", "fingerprint", "prompt_hash", "account", "email_domain"} <= set(kl["entity_type"])


def test_truth_beside_snapshot(world: tuple[WorldInfo, dict[str, pl.DataFrame]],
                               truth: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    info, t = world
    ta, tg = truth
    assert info.truth.parent == info.snapshot.parent == info.out
    assert sorted(p.name for p in info.truth.iterdir()) == ["groups.parquet", "labels.parquet",
                                                            "world.json"]
    for df in t.values():
        assert not {"is_sybil", "group_id", "group_kind", "attributable"} & set(df.columns)
    assert ta.columns == ["account_id", "group_id", "group_kind", "is_sybil", "operator_org_id",
                          "attributable"]
    assert set(tg.columns) >= {"group_id", "group_kind", "size", "tactic", "operator_org_id",
                               "evidence", "proxy_provider"}
    assert_frame_equal(ta.select("account_id"), t["accounts"].select("account_id"))
    assert (ta["is_sybil"] == (ta["group_kind"] == "campaign")).all()
    assert ta.filter(pl.col("group_kind") == "individual")["group_id"].null_count() == \
        ta.filter(pl.col("group_kind") == "individual").height
    sizes = ta.drop_nulls("group_id").group_by("group_id").len()
    assert_frame_equal(tg.select("group_id", size=pl.col("size").cast(pl.UInt32)).sort("group_id"),
                       sizes.rename({"len": "size"}).sort("group_id"))
    meta = json.loads((info.truth / "world.json").read_text())
    assert meta["seed"] == 11 and meta["counts"]["exchanges"] == info.exchanges
    share = ta["is_sybil"].mean()
    assert 0.035 <= share <= 0.07


def _campaign_entities(t: dict[str, pl.DataFrame], ta: pl.DataFrame) -> pl.DataFrame:
    fp = t["account_payments"].join(t["payment_methods"], on="payment_method_id").select(
        "account_id", kind=pl.lit("fingerprint"), entity=pl.col("fingerprint"))
    dv = t["account_devices"].select("account_id", kind=pl.lit("device"), entity=pl.col("device_id"))
    return pl.concat([fp, dv]).join(ta.select("account_id", "group_id"), on="account_id")


def test_campaign_tactics(world: tuple[WorldInfo, dict[str, pl.DataFrame]],
                          truth: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    _, t = world
    ta, tg = truth
    camps = tg.filter(pl.col("group_kind") == "campaign")
    assert camps.height >= 6
    assert camps["size"].min() >= 8
    orgs = set(t["organizations"]["org_id"])
    # careful: no card or device shared with any other account at all
    ent = _campaign_entities(t, ta)
    shared = ent.group_by("kind", "entity").agg(n=pl.col("account_id").n_unique()).filter(pl.col("n") > 1)
    touching = set(ent.join(shared, on=["kind", "entity"])["group_id"].drop_nulls())
    loners = [g for g in camps["group_id"] if g not in touching]
    assert loners, "a campaign must share no card and no device"
    # an operator with no evidence at all, absent from organizations
    none = camps.filter(pl.col("evidence") == "none")
    assert none.height >= 2
    assert not set(none["operator_org_id"]) & orgs
    assert set(camps.filter(pl.col("evidence") == "strong")["operator_org_id"]) <= orgs
    assert camps.filter(pl.col("evidence") == "weak").height >= 1
    assert set(loners) & set(none["group_id"])
    # two campaigns of different operators rent the same proxy provider, and share exits
    by_prov = camps.drop_nulls("proxy_provider").group_by("proxy_provider").agg(
        "group_id", ops=pl.col("operator_org_id").n_unique())
    pair = by_prov.filter(pl.col("ops") >= 2)
    assert pair.height >= 1
    g1, g2 = pair["group_id"][0][:2]
    ips = t["account_ips"].join(ta, on="account_id")
    exits1 = set(ips.filter(pl.col("group_id") == g1)["ip"])
    exits2 = set(ips.filter(pl.col("group_id") == g2)["ip"])
    common = exits1 & exits2
    assert common
    others = set(ips.filter(~pl.col("is_sybil") & pl.col("ip").is_in(list(exits1 | exits2)))["ip"])
    assert others, "ordinary users appear on the rented exits too"
    # attributable matches evidence
    att = ta.filter(pl.col("is_sybil")).join(tg, on="group_id")
    assert (att["attributable"] == (att["evidence"] != "none")).all()
    # behaviour: careful campaigns leak the operator's zone through devices and sync in minutes
    careful = camps.filter(pl.col("label") == "careful")["group_id"][0]
    members = ta.filter(pl.col("group_id") == careful)["account_id"].to_list()
    tz = t["account_devices"].filter(pl.col("account_id").is_in(members)).join(t["devices"],
                                                                                 on="device_id")
    assert (tz["timezone"] == "Asia/Shanghai").mean() > 0.5
    x = t["exchanges"].filter(pl.col("account_id").is_in(members)).with_columns(
        m=pl.col("ts").dt.truncate("1m"))
    per_min = x.group_by("m").agg(pl.col("account_id").n_unique())
    assert (per_min["account_id"] > 1).sum() >= 3


def test_traps(world: tuple[WorldInfo, dict[str, pl.DataFrame]],
               truth: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    info, t = world
    ta, tg = truth
    kl = t["known_links"]
    # a legitimate team on a corporate card that is in known_links for its employer
    fp = t["account_payments"].join(t["payment_methods"], on="payment_method_id").join(ta, on="account_id")
    known_fp = kl.filter(pl.col("entity_type") == "fingerprint").select(
        fingerprint="entity_id", org="org_id")
    teams = fp.filter(pl.col("group_kind") == "company_team").join(known_fp, on="fingerprint")
    teams = teams.filter(pl.col("org") == pl.col("operator_org_id"))
    assert teams.height >= 5 and not teams["is_sybil"].any()
    # a lab with legitimate employees also runs a campaign
    lab_ops = set(tg.filter(pl.col("group_kind") == "lab_employee")["operator_org_id"])
    camp_ops = set(tg.filter(pl.col("group_kind") == "campaign")["operator_org_id"])
    assert lab_ops & camp_ops
    # a public template shared by many ordinary users (and some campaign accounts)
    x = t["exchanges"].drop_nulls("prompt_hash").join(ta, on="account_id")
    tpl = x.group_by("prompt_hash").agg(n=pl.col("account_id").n_unique(),
                                        syb=pl.col("is_sybil").any())
    assert tpl.filter((pl.col("n") > 0.1 * ta.height) & pl.col("syb")).height >= 1
    # a carrier NAT address shared by many ordinary users and some campaign accounts
    ips = t["account_ips"].join(ta, on="account_id").group_by("ip").agg(
        n=pl.len(), syb=pl.col("is_sybil").sum())
    assert ips.filter((pl.col("n") >= 50) & (pl.col("syb") >= 1)).height >= 1
    # a known ASN (co-working NAT) touched by a campaign of a different operator
    asn_org = kl.filter(pl.col("entity_type") == "asn").select(asn=pl.col("entity_id").cast(pl.Int64),
                                                                org="org_id")
    used = pl.concat([
        t["account_ips"].select("account_id", "ip"),
        t["accounts"].select("account_id", ip="signup_ip").drop_nulls()]).join(
        t["ips"], on="ip").join(asn_org, on="asn").join(ta, on="account_id")
    foreign = used.filter(pl.col("is_sybil") & (pl.col("org") != pl.col("operator_org_id")))
    assert foreign.height >= 1
    traps = {d["trap"] for d in json.loads((info.truth / "world.json").read_text())["traps"]}
    assert {"coworking_asn", "legit_team_known_card", "course_cohorts"} <= traps


def test_as_of_cuts_describe_one_world(tmp_path: Path) -> None:
    t1 = generate_world(tmp_path / "t1", accounts=2500, seed=5, days=58, as_of_day=44)
    t2 = generate_world(tmp_path / "t2", accounts=2500, seed=5, days=58, as_of_day=58)
    a1, a2 = load(t1.snapshot), load(t2.snapshot)
    ids1, ids2 = set(a1["accounts"]["account_id"]), set(a2["accounts"]["account_id"])
    assert ids1 < ids2 and t2.accounts == 2500
    # the shared past is identical, row for row
    assert_frame_equal(a1["accounts"], a2["accounts"].filter(pl.col("account_id").is_in(ids1)))
    cut = pl.select(T0 + pl.duration(days=44)).item()
    assert_frame_equal(a1["exchanges"], a2["exchanges"].filter(pl.col("ts") < cut))
    assert_frame_equal(a1["organizations"], a2["organizations"])
    assert_frame_equal(a1["known_links"], a2["known_links"])
    # the same campaigns keep recruiting after T1
    g1 = pl.read_parquet(t1.truth / "labels.parquet")
    g2 = pl.read_parquet(t2.truth / "labels.parquet")
    new = g2.filter(~pl.col("account_id").is_in(ids1) & pl.col("is_sybil"))
    assert new.height >= 5
    assert set(new["group_id"]) & set(g1.filter(pl.col("is_sybil"))["group_id"])
    assert_frame_equal(g1, g2.filter(pl.col("account_id").is_in(ids1)))
    # last_seen never passes the cut; T1 aggregates are a prefix of T2's
    assert a1["account_ips"]["last_seen"].max() < cut
    assert a1["account_payments"]["last_seen"].max() < cut


def test_csv_format_matches_parquet(tmp_path: Path) -> None:
    p = generate_world(tmp_path / "p", accounts=1500, seed=2)
    c = generate_world(tmp_path / "c", accounts=1500, seed=2, fmt="csv")
    assert sorted(x.name for x in c.snapshot.iterdir()) == sorted(f"{n}.csv" for n in LOAD_ORDER)
    for name in LOAD_ORDER:
        want = pl.read_parquet(p.snapshot / f"{name}.parquet")
        got = pl.read_csv(c.snapshot / f"{name}.csv", schema=want.schema)
        assert_frame_equal(got, want, check_exact=False)


def test_cli_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--accounts", "1200", "--seed", "1", "--out", str(tmp_path / "w"), "--days", "30"]) == 0
    line = capsys.readouterr().out.strip()
    assert "1200 accounts" in line and line.count("\n") == 0
    assert main(["--accounts", "10", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(WorldgenError):
        generate_world(tmp_path / "y", accounts=2000, days=30, as_of_day=31)


def test_committed_sample_is_fresh(tmp_path: Path) -> None:
    fresh = generate_world(tmp_path / "s", accounts=5000, seed=7)
    for name in LOAD_ORDER:
        assert_frame_equal(pl.read_parquet(SAMPLE / "snapshot" / f"{name}.parquet"),
                           pl.read_parquet(fresh.snapshot / f"{name}.parquet"), check_exact=True)
    for name in ("labels", "groups"):
        assert_frame_equal(pl.read_parquet(SAMPLE / "truth" / f"{name}.parquet"),
                           pl.read_parquet(fresh.truth / f"{name}.parquet"))
    assert json.loads((SAMPLE / "truth" / "world.json").read_text()) == json.loads(
        (fresh.truth / "world.json").read_text())


def test_default_world_holds_no_family_population(world: tuple[WorldInfo, dict[str, pl.DataFrame]],
                                                  truth: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    # family worlds draw from streams of their own: a default world is what it always was
    info, t = world
    ta, tg = truth
    assert set(ta["group_kind"]) <= {"individual", "family", "company_team", "lab_employee", "campaign"}
    assert "network" not in ta.columns
    assert set(tg["label"].drop_nulls()) & {"mobile_resale", "dc_rotating"} == set()
    assert "datacenter" not in set(t["proxies"]["kind"])
    meta = json.loads((info.truth / "world.json").read_text())
    assert "family" not in meta and "family" not in meta["params"]
