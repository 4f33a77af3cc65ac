"""Tests of attribution.stages.ingest: a valid snapshot round-trips, the broken corpus is handled."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from attribution.contracts.schema import LOAD_ORDER, MAX_ID_LENGTH, TABLES
from attribution.contracts.settings import Neo4jSettings, RunParams
from attribution.stages import ingest
from attribution.stages.ingest import BadInput, Snapshot, TableCount, contract_schema, read_snapshot
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore
from tests.support.bad_snapshots import (
    CASES,
    LONG_ACCOUNT,
    Case,
    Loads,
    Refused,
    build_valid,
    valid_tables,
    write_table,
)

STORES = ["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)]


def _invariants(snap: Snapshot) -> None:
    """What every loaded snapshot must satisfy, whatever went in."""
    assert set(snap.tables) == set(snap.counts) == set(LOAD_ORDER)
    for name, frame in snap.tables.items():
        count = snap.counts[name]
        assert count.read == count.loaded + count.rejected, name
        assert frame.height == count.loaded, name
        schema = contract_schema(name)
        assert frame.columns[: len(schema)] == list(schema), name
        for col, dtype in schema.items():
            assert frame.schema[col] == dtype, (name, col)
        if count.rejected:
            bad = snap.rejected[name]
            assert bad.height == count.rejected
            assert all(dtype == pl.String for dtype in bad.schema.values()), name
            reason = "ingest_reason" if "ingest_reason" in bad.columns else "reason"
            assert bad[reason].null_count() == 0
        else:
            assert name not in snap.rejected
        spec = TABLES[name]
        for column in spec.columns:
            if not column.nullable:
                assert frame[column.name].null_count() == 0, (name, column.name)
            if column.choices:
                assert set(frame[column.name].drop_nulls()) <= set(column.choices)
        if spec.key:
            assert frame.select(spec.key).is_unique().all(), name
        for ref in spec.references:
            if snap.counts[ref.table].read:  # an absent target is checked by the corpus
                values = frame[ref.column].drop_nulls()
                assert values.is_in(snap.tables[ref.table][ref.target].implode()).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_snapshot_round_trips(tmp_path: Path, fmt: Any) -> None:
    tables = build_valid(tmp_path, fmt=fmt)
    messages: list[str] = []
    snap = read_snapshot(tmp_path, progress=messages.append)
    _invariants(snap)
    assert snap.rejected == {}
    assert "reading exchanges" in messages
    for name, frame in tables.items():
        assert snap.counts[name] == TableCount(frame.height, frame.height, 0)
        assert_frame_equal(snap.tables[name], frame.with_columns(
            pl.col(c).cast(t) for c, t in contract_schema(name).items()
        ))  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", snap.digest)


def test_csv_and_parquet_load_alike_and_digest_follows_bytes(tmp_path: Path) -> None:
    a, b = build_valid(tmp_path / "a", fmt="csv"), build_valid(tmp_path / "b", fmt="parquet")
    assert a.keys() == b.keys()
    sa, sb = read_snapshot(tmp_path / "a"), read_snapshot(tmp_path / "b")
    for name in LOAD_ORDER:
        assert_frame_equal(sa.tables[name], sb.tables[name])
    assert sa.digest != sb.digest
    assert read_snapshot(tmp_path / "a").digest == sa.digest
    (tmp_path / "a" / "README.txt").write_text("not a table")
    assert read_snapshot(tmp_path / "a").digest == sa.digest


def test_absent_optional_tables_are_empty_with_contract_dtypes(tmp_path: Path) -> None:
    tables = build_valid(tmp_path)
    for name in tables:
        if name != "accounts":
            (tmp_path / f"{name}.csv").unlink()
    snap = read_snapshot(tmp_path)
    _invariants(snap)
    assert snap.counts["exchanges"] == TableCount(0, 0, 0)
    assert dict(snap.tables["exchanges"].schema) == contract_schema("exchanges")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(tmp_path: Path, case: Case) -> None:
    case.build(tmp_path)
    if isinstance(case.expect, Refused):
        with pytest.raises(BadInput) as info:
            read_snapshot(tmp_path, max_rejected_share=case.max_rejected_share)
        message = str(info.value)
        assert "\n" not in message and len(message) < 600
        assert re.search(case.expect.pattern, message), message
        assert not _in_clear(message), message
        return
    assert isinstance(case.expect, Loads)
    snap = read_snapshot(tmp_path, max_rejected_share=case.max_rejected_share)
    _invariants(snap)
    assert {k: v.height for k, v in snap.rejected.items()} == {
        k: n for k, (n, _) in case.expect.rejected.items()
    }
    for name, (_, pattern) in case.expect.rejected.items():
        bad = snap.rejected[name]
        reasons = bad["ingest_reason" if "ingest_reason" in bad.columns else "reason"].to_list()
        assert all(re.search(pattern, r) for r in reasons), reasons
    if case.expect.check is not None:
        case.expect.check(snap)


def _in_clear(message: str) -> list[str]:
    """E-mails and IPs of the corpus' snapshot that a message shows in full."""
    tables = valid_tables()
    secrets = set(tables["accounts"]["email"]) | set(tables["ips"]["ip"])
    return sorted(s for s in secrets if s in message) + re.findall(r"\S+@\S+", message)


def _store(kind: str, root: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "embedded":
        return EmbeddedStore(root / "store")
    from attribution.store.neo4j import Neo4jStore

    server = request.getfixturevalue("neo4j_clean")
    return Neo4jStore(Neo4jSettings(uri=server.uri, user=server.user,
                                    password=server.password, database=server.database))


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_runs_alike_on_both_stores(tmp_path: Path, case: Case, store: str,
                                          request: pytest.FixtureRequest) -> None:
    """Both stores accept the same input: what ingest refuses stops the run the same way on
    either, and what it loads runs to the end on either with the same results (a 10 kB
    account_id ran on the embedded store and ended the run on Neo4j)."""
    from attribution.job.pipeline import run

    case.build(tmp_path / "snapshot")
    params = RunParams(max_rejected_share=case.max_rejected_share)
    target = _store(store, tmp_path, request)
    try:
        if isinstance(case.expect, Refused):
            with pytest.raises(BadInput, match=case.expect.pattern):
                run(tmp_path / "snapshot", None, target, params=params)
            return
        run(tmp_path / "snapshot", None, target, params=params)
        result = target.read_results()
    finally:
        target.close()
    assert result is not None
    snap = read_snapshot(tmp_path / "snapshot", max_rejected_share=case.max_rejected_share)
    assert sorted(result.assignments["account_id"]) == sorted(snap.tables["accounts"]["account_id"])
    if store == "neo4j":
        embedded = EmbeddedStore(tmp_path / "embedded")
        run(tmp_path / "snapshot", None, embedded, params=params)
        reference = embedded.read_results()
        assert reference is not None
        for name in ("assignments", "fleets", "evidence"):
            assert_frame_equal(getattr(result, name), getattr(reference, name),
                               check_exact=False, abs_tol=1e-9, rel_tol=0)


def test_identifier_columns_are_limited() -> None:
    """Every key and id column of every table is an identifier (its length limited), and
    the limit stays well under Neo4j's index key limit (8,167 bytes) in UTF-8's worst case."""
    assert MAX_ID_LENGTH * 4 < 8167 // 2
    ids = {(t.name, c.name) for t in TABLES.values() for c in t.columns if c.identifier}
    for t in TABLES.values():
        keys = set(t.key) | {r.column for r in t.references}
        assert {(t.name, k) for k in keys if t.column(k).kind != "int"} - {
            (t.name, "entity_type")} <= ids, t.name
    assert {("accounts", "email"), ("exchanges", "prompt_hash"), ("exchanges", "device_id"),
            ("payment_methods", "fingerprint"), ("known_links", "entity_id")} <= ids
    assert len(LONG_ACCOUNT) > 8167


def test_corpus_covers_the_brief() -> None:
    names = {c.name for c in CASES}
    assert {
        "missing_required_table", "missing_required_column", "unparsable_ip",
        "unparsable_timestamp", "duplicate_keys", "dangling_references", "empty_file_required",
        "empty_file_optional", "header_only", "wrong_delimiter", "non_utf8_rows",
        "non_utf8_whole_file", "parquet_int_timestamps", "parquet_float_account_ids",
        "parquet_string_tokens", "both_csv_and_parquet", "over_the_limit", "under_the_limit",
        "long_identifiers", "sample_row_masked", "sample_row_masked_by_entity_type",
    } <= names  # fmt: skip


def test_limit_is_strict_and_settable(tmp_path: Path) -> None:
    build_valid(tmp_path)
    frame = pl.read_csv(tmp_path / "exchanges.csv", infer_schema=False)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 6).then(pl.lit("bad")).otherwise("ts").alias("ts")
    )  # 6 of 24 rows = 25 %
    write_table(tmp_path, "exchanges", frame, "csv")
    assert read_snapshot(tmp_path, max_rejected_share=0.25).counts["exchanges"].rejected == 6
    with pytest.raises(BadInput, match=r"^table exchanges: 25\.0% of rows rejected"):
        read_snapshot(tmp_path, max_rejected_share=0.249)
    with pytest.raises(BadInput, match="max rejected share"):
        read_snapshot(tmp_path, max_rejected_share=1.5)


def test_a_large_table_read_in_parts_loads_and_rejects_as_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exchanges in parts of 7 rows (as 50M rows go in parts of 8M): the same loaded rows
    in the same order, the same rejected rows with the same reasons, codes that agree
    across parts."""
    build_valid(tmp_path, fmt="parquet", exchanges=40)
    frame = pl.read_parquet(tmp_path / "exchanges.parquet").with_columns(
        pl.when(pl.int_range(pl.len()) % 9 == 4).then(pl.lit("nobody"))
        .otherwise(pl.col("account_id")).alias("account_id"),
        pl.when(pl.int_range(pl.len()) % 13 == 6).then(-1)
        .otherwise(pl.col("input_tokens")).alias("input_tokens"),
    )  # fmt: skip
    write_table(tmp_path, "exchanges", frame, "parquet")
    whole = read_snapshot(tmp_path, max_rejected_share=0.5)
    monkeypatch.setattr(ingest, "_PART_ROWS", 7)
    parted = read_snapshot(tmp_path, max_rejected_share=0.5)
    assert parted.counts == whole.counts
    assert whole.counts["exchanges"].rejected == 7  # rows 4, 13, 22, 31 and 6, 19, 32
    assert_frame_equal(parted.tables["exchanges"], whole.tables["exchanges"])
    assert_frame_equal(parted.rejected["exchanges"], whole.rejected["exchanges"])
    codes = parted.tables["exchanges"]["account_id"]
    assert codes.dtype == pl.Categorical
    assert codes.to_physical().n_unique() == codes.cast(pl.String).n_unique()


def test_long_values_in_limit_message_are_cut(tmp_path: Path) -> None:
    build_valid(tmp_path)
    frame = pl.read_csv(tmp_path / "devices.csv", infer_schema=False)
    frame = frame.with_columns(pl.lit("x" * 5000 + "\nnext line").alias("user_agent"))
    no_id = frame.head(1).with_columns(pl.lit(None, pl.String).alias("device_id"))
    frame = pl.concat([frame, no_id])
    write_table(tmp_path, "devices", frame, "csv")
    with pytest.raises(BadInput) as info:
        read_snapshot(tmp_path, max_rejected_share=0.0)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600
    assert "user_agent=xxxxxxxx" in message and "..." in message


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is not a directory"):
        read_snapshot(tmp_path / "nope")


def _count_ip_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every value handed to the per-value (Python) IP parser."""
    seen: list[str] = []
    real = ingest._canonical_ip

    def counting(value: str) -> str | None:
        seen.append(value)
        return real(value)

    monkeypatch.setattr(ingest, "_canonical_ip", counting)
    return seen


def test_only_distinct_non_canonical_ips_reach_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_valid(tmp_path)
    frame = pl.read_csv(tmp_path / "exchanges.csv", infer_schema=False)
    ips = ["10.0.0.1", "2001:DB8::1", "2001:db8:0::1", " 10.0.0.2", "2001:db8:1:2:3:4:5:6"] * 20
    frame = pl.concat([frame.head(1)] * len(ips)).with_columns(pl.Series("ip", ips))
    write_table(tmp_path, "exchanges", frame, "csv")
    seen = _count_ip_calls(monkeypatch)
    snap = read_snapshot(tmp_path)
    # once per distinct value and column pass: the other tables hold 2001:db8::1 as well
    assert seen.count(" 10.0.0.2") == seen.count("2001:DB8::1") == seen.count("2001:db8:0::1") == 1
    assert "10.0.0.1" not in seen and "2001:db8:1:2:3:4:5:6" not in seen
    assert set(snap.tables["exchanges"]["ip"]) == {
        "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8:1:2:3:4:5:6"
    }  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4 ",
     "2001:db8:1:2:3:4:5:6", "2001:db8:0:2:3:4:5:6", "2001:DB8:1:2:3:4:5:6",
     "2001:0db8:1:2:3:4:5:6", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.4", "1:2:3:4:5:6:7"],
)  # fmt: skip
def test_vectorised_ip_pattern_agrees_with_ipaddress(text: str) -> None:
    """What the pattern takes as canonical, ipaddress prints unchanged."""
    fast = pl.Series([text]).str.contains(ingest._CANONICAL_IP).item()
    if fast:
        assert ingest._canonical_ip(text) == text


def _no_python_udfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every per-row/per-batch Python hook in polars fail loudly."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("ingest must not call Python per row")

    for owner in (pl.Expr, pl.Series, pl.DataFrame, pl.LazyFrame):
        for attr in ("map_elements", "map_batches", "map_rows", "map_groups", "apply"):
            if hasattr(owner, attr):
                monkeypatch.setattr(owner, attr, refuse)


def test_300k_exchanges_validated_vectorised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_valid(tmp_path, fmt="parquet")
    n = 300_000
    rng = np.random.default_rng(7)
    accounts = [f"a{i}" for i in range(1, 7)]
    ips = [f"10.{i // 256}.{i % 256}.9" for i in range(2000)]
    ips += [f"2001:DB8::{i:x}" for i in range(50)]
    frame = pl.DataFrame(
        {
            "account_id": pl.Series(accounts).gather(rng.integers(0, 6, n)),
            "ts": pl.datetime_range(
                pl.datetime(2026, 1, 1), pl.datetime(2026, 2, 1), "1s", time_zone="UTC", eager=True
            ).head(n),
            "ip": pl.Series(ips).gather(rng.integers(0, len(ips), n)),
            "device_id": pl.Series(["d1", "d2", None]).gather(rng.integers(0, 3, n)),
            "model": "m",
            "input_tokens": rng.integers(0, 5000, n),
            "output_tokens": rng.integers(0, 5000, n),
            "capability": "coding",
            "prompt_hash": "h",
        }
    ).with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("a99")).otherwise("account_id")
                   .alias("account_id"))  # fmt: skip
    write_table(tmp_path, "exchanges", frame, "parquet")
    _no_python_udfs(monkeypatch)
    calls = _count_ip_calls(monkeypatch)
    start = time.perf_counter()
    snap = read_snapshot(tmp_path)
    elapsed = time.perf_counter() - start
    assert snap.counts["exchanges"] == TableCount(n, n - 1, 1)
    assert len(calls) <= 50 + 5  # the distinct IPv6 texts (+ the small tables'), not per row
    assert elapsed < 10, elapsed
