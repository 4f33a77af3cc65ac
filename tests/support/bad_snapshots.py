"""A valid snapshot and a corpus of broken ones, built programmatically.

Each :class:`Case` builds one snapshot directory and says what ``read_snapshot`` must do with
it: refuse it (:class:`Refused`, a pattern for the one-line :class:`BadInput` message) or load
it (:class:`Loads`, the rejected rows per table and a pattern their reasons match). The corpus
is generated rather than committed so a contract change touches one place;
``python -m tests.support.bad_snapshots OUT_DIR`` writes every case to ``OUT_DIR/<case>`` for tools
(the CLI tests, a manual look) that want files, with the expected outcome in ``EXPECTED.txt``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from attribution.contracts.schema import MAX_ID_LENGTH, TABLES
from attribution.stages.ingest import Snapshot

Fmt = Literal["csv", "parquet"]
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def _ts(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def valid_tables(*, exchanges: int = 24) -> dict[str, pl.DataFrame]:
    """Every contract table, typed as ingest returns them; a small world of two fleets."""
    accounts = pl.DataFrame(
        {
            "account_id": [f"a{i}" for i in range(1, 7)],
            "created_at": [_ts(-24 * i) for i in range(1, 7)],
            "email": [f"user{i}@{['x.ai', 'x.ai', 'y.org'][(i - 1) % 3]}" for i in range(1, 7)],
            "country": ["US", "US", "DE", None, "FR", "US"],
            "plan": ["free", "pro", "team", "api", None, "free"],
            "org_claim": [None, "Acme", None, None, "Acme", None],
            "signup_ip": ["203.0.113.5", "2001:db8::1", None, "198.51.100.7", "203.0.113.5", None],
        }
    )
    payment_methods = pl.DataFrame(
        {
            "payment_method_id": ["pm1", "pm2", "pm3"],
            "fingerprint": ["fpA", "fpA", "fpB"],
            "kind": ["card", "card", "wallet"],
            "bin": ["411111", "411111", None],
            "issuer_country": ["US", "US", None],
        }
    )
    account_payments = pl.DataFrame(
        {
            "account_id": ["a1", "a2", "a3", "a4"],
            "payment_method_id": ["pm1", "pm2", "pm3", "pm3"],
            "first_seen": [_ts(0), _ts(1), _ts(2), _ts(3)],
            "last_seen": [_ts(10), _ts(11), _ts(2), _ts(30)],
        }
    )
    devices = pl.DataFrame(
        {
            "device_id": ["d1", "d2", "d3"],
            "user_agent": ["Mozilla/5.0 (X11)", "curl/8.4", None],
            "platform": ["linux", None, "macos"],
            "timezone": ["Asia/Shanghai", "Europe/Berlin", None],
            "language": ["zh-CN", "de", None],
        }
    )
    account_devices = pl.DataFrame(
        {
            "account_id": ["a1", "a2", "a3", "a5"],
            "device_id": ["d1", "d1", "d2", "d3"],
            "first_seen": [_ts(0), _ts(0), _ts(5), _ts(6)],
            "last_seen": [_ts(5), _ts(6), _ts(5), _ts(9)],
            "sessions": [3, 1, 7, 0],
        }
    )
    proxies = pl.DataFrame(
        {
            "proxy_id": ["p1", "p2"],
            "provider": ["brightdata", "mullvad"],
            "kind": ["residential", "vpn"],
        }
    )
    ips = pl.DataFrame(
        {
            "ip": ["203.0.113.5", "2001:db8::1", "198.51.100.7"],
            "asn": [64500, 64501, None],
            "as_org": ["Example Net", None, None],
            "country": ["US", "DE", None],
            "hosting": [True, False, None],
            "proxy_id": ["p1", None, "p2"],
        },
        schema_overrides={"asn": pl.Int64},
    )
    account_ips = pl.DataFrame(
        {
            "account_id": ["a1", "a2", "a3", "a4"],
            "ip": ["203.0.113.5", "203.0.113.5", "2001:db8::1", "198.51.100.7"],
            "first_seen": [_ts(0), _ts(1), _ts(2), _ts(3)],
            "last_seen": [_ts(4), _ts(5), _ts(6), _ts(7)],
            "requests": [120, 80, 5, 0],
        }
    )
    n = exchanges
    exchanges_df = pl.DataFrame(
        {
            "account_id": [f"a{1 + i % 6}" for i in range(n)],
            "ts": [_ts(i / 4) for i in range(n)],
            "ip": [["203.0.113.5", "2001:db8::1", None][i % 3] for i in range(n)],
            "device_id": [["d1", None, "d2"][i % 3] for i in range(n)],
            "model": ["m-large"] * n,
            "input_tokens": [100 + i for i in range(n)],
            "output_tokens": [10 * i for i in range(n)],
            "capability": [["coding", "agentic", None, "chat"][i % 4] for i in range(n)],
            "prompt_hash": [["h1", "h2"][i % 2] for i in range(n)],
        }
    )
    organizations = pl.DataFrame(
        {
            "org_id": ["o1", "o2"],
            "name": ["Acme AI", "Beta Labs"],
            "country": ["CN", None],
            "kind": ["ai_lab", "company"],
        }
    )
    known_links = pl.DataFrame(
        {
            "entity_type": ["asn", "fingerprint", "email_domain", "ip", "account"],
            "entity_id": ["64500", "fpA", "y.org", "2001:db8::1", "a3"],
            "org_id": ["o1", "o1", "o2", "o1", "o2"],
            "source": ["whois", "corporate_card_registry", "prior_case", "whois", "prior_case"],
            "confidence": [0.9, 1.0, 0.7, 1.0, 0.6],
            "observed_at": [_ts(-100), None, _ts(-50), None, _ts(-10)],
        }
    )
    return {
        "accounts": accounts,
        "payment_methods": payment_methods,
        "account_payments": account_payments,
        "devices": devices,
        "account_devices": account_devices,
        "proxies": proxies,
        "ips": ips,
        "account_ips": account_ips,
        "exchanges": exchanges_df,
        "organizations": organizations,
        "known_links": known_links,
    }


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame as a CSV exporter would write it: ISO-8601 timestamps with Z, all text."""
    return frame.with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        pl.col(pl.Boolean).cast(pl.String).str.to_lowercase(),
    ).with_columns(pl.all().cast(pl.String))


def write_table(root: Path, name: str, frame: pl.DataFrame, fmt: Fmt) -> Path:
    """Write one table file, replacing any other file of the same table."""
    for ext in ("csv", "parquet"):
        (root / f"{name}.{ext}").unlink(missing_ok=True)
    path = root / f"{name}.{fmt}"
    if fmt == "csv":
        as_text(frame).write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def build_valid(root: Path, *, fmt: Fmt = "csv", exchanges: int = 24) -> dict[str, pl.DataFrame]:
    """Write the valid snapshot into ``root``; return its typed tables."""
    root.mkdir(parents=True, exist_ok=True)
    tables = valid_tables(exchanges=exchanges)
    for name, frame in tables.items():
        write_table(root, name, frame, fmt)
    return tables


def _csv_text(root: Path, name: str) -> str:
    return (root / f"{name}.csv").read_text(encoding="utf-8")


def _exchanges_with_bad_ts(root: Path, rows: int, bad: int) -> None:
    build_valid(root)
    frame = as_text(valid_tables(exchanges=rows)["exchanges"])
    ts = frame["ts"].to_list()
    for i in range(bad):
        ts[(i * 37) % rows] = "2026-13-01T00:00:00Z"
    write_table(root, "exchanges", frame.with_columns(pl.Series("ts", ts)), "csv")


# --- expectations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """read_snapshot raises BadInput whose message matches ``pattern`` (re.search)."""

    pattern: str


@dataclass(frozen=True)
class Loads:
    """read_snapshot returns; ``rejected`` maps table -> (rows, pattern every reason matches).

    Tables not named must have no rejections. ``check`` asserts more about the result.
    """

    rejected: dict[str, tuple[int, str]] = field(default_factory=dict)
    check: Callable[[Snapshot], None] | None = None


@dataclass(frozen=True)
class Case:
    """One snapshot of the corpus and what ingest must make of it."""

    name: str
    build: Callable[[Path], None]
    expect: Refused | Loads
    max_rejected_share: float = 0.5
    doc: str = ""


CASES: list[Case] = []


def case(
    expect: Refused | Loads, *, max_rejected_share: float = 0.5
) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register a builder function as a corpus case; its docstring documents it."""

    def register(build: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES.append(Case(build.__name__, build, expect, max_rejected_share, build.__doc__ or ""))
        return build

    return register


# --- table and file problems: BadInput ------------------------------------------------------


@case(Refused(r"^missing required table accounts: no accounts\.csv or accounts\.parquet$"))
def missing_required_table(root: Path) -> None:
    """No accounts file at all."""
    build_valid(root)
    (root / "accounts.csv").unlink()


@case(Refused(r"found Accounts\.CSV"))
def misnamed_required_table(root: Path) -> None:
    """accounts spelled with capitals: refused, with a hint naming the file found."""
    build_valid(root)
    (root / "accounts.csv").rename(root / "Accounts.CSV")


@case(Refused(r"^accounts\.csv: missing required column email$"))
def missing_required_column(root: Path) -> None:
    """accounts without its non-nullable email column."""
    build_valid(root)
    write_table(root, "accounts", valid_tables()["accounts"].drop("email"), "csv")


@case(Refused(r"^accounts\.csv is empty \(0 bytes\)"))
def empty_file_required(root: Path) -> None:
    """A 0-byte accounts.csv."""
    build_valid(root)
    (root / "accounts.csv").write_bytes(b"")


@case(Refused(r"^devices\.parquet is empty \(0 bytes\).*or leave the file out$"))
def empty_file_optional(root: Path) -> None:
    """A 0-byte optional table is refused too: it is what a crashed export leaves."""
    build_valid(root, fmt="parquet")
    (root / "devices.parquet").write_bytes(b"")


@case(Refused(r"accounts\.csv has no header row"))
def blank_header(root: Path) -> None:
    """A CSV holding only a newline."""
    build_valid(root)
    (root / "accounts.csv").write_bytes(b"\n")


@case(
    Refused(
        r"^accounts\.csv: missing required columns account_id, created_at, email "
        r"\(the header looks semicolon-separated; snapshot CSV files are comma-separated\)$"
    )
)
def wrong_delimiter(root: Path) -> None:
    """A semicolon-separated accounts.csv reads as one column."""
    build_valid(root)
    as_text(valid_tables()["accounts"]).write_csv(root / "accounts.csv", separator=";")


@case(Refused(r"^table accounts: both accounts\.csv and accounts\.parquet exist; keep one$"))
def both_csv_and_parquet(root: Path) -> None:
    """The same table as CSV and Parquet."""
    build_valid(root)
    valid_tables()["accounts"].write_parquet(root / "accounts.parquet")


@case(Refused(r"^accounts\.csv: column account_id appears more than once$"))
def duplicate_column(root: Path) -> None:
    """Two account_id columns in one header."""
    build_valid(root)
    text = _csv_text(root, "accounts").splitlines()
    lines = [text[0] + ",account_id"] + [line + ",zz" for line in text[1:]]
    (root / "accounts.csv").write_text("\n".join(lines) + "\n")


@case(Refused(r"^devices\.csv: missing required column device_id \(the header is not valid UTF-8"))
def non_utf8_header(root: Path) -> None:
    """A Latin-1 byte inside the device_id header name."""
    build_valid(root)
    text = _csv_text(root, "devices").encode()
    (root / "devices.csv").write_bytes(text.replace(b"device_id", b"d\xe9vice_id", 1))


@case(Refused(r"^devices\.csv: missing required column device_id \(the file looks UTF-16"))
def utf16_file(root: Path) -> None:
    """devices.csv saved as UTF-16 with a BOM (a spreadsheet's "Unicode text")."""
    build_valid(root)
    (root / "devices.csv").write_bytes(_csv_text(root, "devices").encode("utf-16"))


@case(Refused(r"^exchanges\.csv: cannot read: found more fields than defined"))
def ragged_csv(root: Path) -> None:
    """A data row with more fields than the header."""
    build_valid(root)
    text = _csv_text(root, "exchanges")
    (root / "exchanges.csv").write_text(text + "a1,2026-01-05T00:00:00Z,,,,1,2,,,surplus\n")


@case(Refused(r"^exchanges\.parquet: not a readable PARQUET file: "))
def corrupt_parquet(root: Path) -> None:
    """Random bytes named .parquet."""
    build_valid(root, fmt="parquet")
    (root / "exchanges.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)


@case(
    Refused(
        r"^exchanges\.parquet: column ts has type Int64, which cannot be read as a timestamp "
        r"\(Parquet Datetime or ISO-8601 text\)$"
    )
)
def parquet_int_timestamps(root: Path) -> None:
    """Epoch integers where a Datetime belongs: the unit is a guess, so refused."""
    build_valid(root, fmt="parquet")
    frame = valid_tables()["exchanges"].with_columns(pl.col("ts").dt.epoch("s"))
    write_table(root, "exchanges", frame, "parquet")


@case(Refused(r"^ips\.parquet: column hosting has type Float64, which cannot be read as a bool"))
def parquet_float_booleans(root: Path) -> None:
    """0.0/1.0 floats in a boolean column."""
    build_valid(root, fmt="parquet")
    frame = valid_tables()["ips"].with_columns(pl.col("hosting").cast(pl.Float64))
    write_table(root, "ips", frame, "parquet")


@case(Refused(r"^devices\.parquet: cannot read: invalid utf8 \(Binary columns: device_id\)$"))
def parquet_binary_not_utf8(root: Path) -> None:
    """A Binary id column holding bytes that are not UTF-8 text: cannot be cast, refused."""
    build_valid(root, fmt="parquet")
    ids = pl.Series("device_id", [b"d1", b"d\xff2", b"d3"], dtype=pl.Binary)
    write_table(root, "devices", valid_tables()["devices"].with_columns(ids), "parquet")


@case(Refused(r"^accounts\.parquet: column email has type List\(String\)"))
def parquet_nested_type(root: Path) -> None:
    """A list where text belongs."""
    build_valid(root, fmt="parquet")
    frame = valid_tables()["accounts"].with_columns(pl.concat_list(pl.col("email")))
    write_table(root, "accounts", frame, "parquet")


@case(
    Refused(
        r"^account_devices\.csv: column device_id refers to devices, "
        r"but the snapshot has no devices table$"
    )
)
def absent_referenced_table(root: Path) -> None:
    """account_devices without devices: every row would dangle."""
    build_valid(root)
    (root / "devices.csv").unlink()


@case(
    Refused(
        r"^table exchanges: 3\.2% of rows rejected \(32 of 1000; limit 1\.0%\); "
        r"column ts: unparsable timestamp; sample row: account_id=a1, ts=2026-13-01T00:00:00Z, "
        r"ip=203\.0\.113\.0/24, device_id=…, "
    ),
    max_rejected_share=0.01,
)
def over_the_limit(root: Path) -> None:
    """32 of 1000 exchanges with an impossible month: over the default 1 % limit."""
    _exchanges_with_bad_ts(root, 1000, 32)


@case(
    Refused(r"^table accounts: .* column country: invalid UTF-8; is the file UTF-8\?; sample row"),
    max_rejected_share=0.01,
)
def non_utf8_whole_file(root: Path) -> None:
    """accounts.csv written in Latin-1: most rows carry invalid bytes."""
    build_valid(root)
    frame = as_text(valid_tables()["accounts"])
    frame = frame.with_columns(pl.lit("Côte d'Ivoire").alias("country"))
    (root / "accounts.csv").write_bytes(frame.write_csv().encode("latin-1"))


@case(
    Refused(
        r"^table account_payments: 50\.0% of rows rejected \(2 of 4; limit 40\.0%\); "
        r"column account_id: refers to a rejected row of accounts; sample row: account_id=a1, "
    ),
    max_rejected_share=0.4,
)
def rejection_cascades(root: Path) -> None:
    """Two accounts rejected; their payment rows dangle and push account_payments over 40 %."""
    build_valid(root)
    frame = as_text(valid_tables()["accounts"])
    created = frame["created_at"].to_list()
    created[0] = created[1] = "yesterday"
    write_table(root, "accounts", frame.with_columns(pl.Series("created_at", created)), "csv")


@case(
    Refused(
        r"^table accounts: 100\.0% of rows rejected \(6 of 6; limit 1\.0%\); column created_at: "
        r"unparsable timestamp; sample row: account_id=a1, created_at=yesterday, email=<email>, "
        r"country=US, plan=free, org_claim=null, signup_ip=203\.0\.113\.0/24$"
    ),
    max_rejected_share=0.01,
)
def sample_row_masked(root: Path) -> None:
    """Every account rejected: the sample row shows no e-mail and only the sign-up IP's /24."""
    build_valid(root)
    frame = as_text(valid_tables()["accounts"]).with_columns(pl.lit("yesterday").alias("created_at"))
    write_table(root, "accounts", frame, "csv")


@case(
    Refused(
        r"^table known_links: 40\.0% of rows rejected .* column confidence: out of range 0\.\.1; "
        r"sample row: entity_type=fingerprint, entity_id=…9f2c, org_id=o1, "
        r"source=corporate_card_registry, confidence=1\.5, observed_at=null$"
    ),
    max_rejected_share=0.01,
)
def sample_row_masked_by_entity_type(root: Path) -> None:
    """A known card's fingerprint in a sample row is masked as a card: its entity_type says so."""
    build_valid(root)
    links = valid_tables()["known_links"].with_columns(
        pl.Series("entity_id", ["64500", "fp_corp_card_9f2c", "y.org", "2001:db8::1", "a3"]),
        pl.Series("confidence", [0.9, 1.5, 0.7, 1.5, 0.6]),
    )
    write_table(root, "known_links", links, "csv")


# --- row problems: rejected rows ------------------------------------------------------------


@case(Loads({"account_ips": (2, r"^unparsable IP \(ip\)$")}))
def unparsable_ip(root: Path) -> None:
    """Two account_ips rows with IPs ipaddress refuses."""
    build_valid(root)
    frame = as_text(valid_tables()["account_ips"])
    frame = frame.with_columns(pl.Series("ip", ["999.1.1.1", "203.0.113.5", "not-an-ip", "::1"]))
    write_table(root, "account_ips", frame, "csv")


@case(Loads({"exchanges": (3, r"^unparsable timestamp \(ts\)$")}))
def unparsable_timestamp(root: Path) -> None:
    """Three exchanges with bad timestamps: month 13, Feb 30, free text."""
    build_valid(root)
    frame = as_text(valid_tables()["exchanges"])
    ts = frame["ts"].to_list()
    ts[0], ts[5], ts[9] = "2026-13-01", "2026-02-30T10:00:00Z", "last tuesday"
    write_table(root, "exchanges", frame.with_columns(pl.Series("ts", ts)), "csv")


def _check_duplicates(snap: Snapshot) -> None:
    accounts = snap.tables["accounts"]
    assert accounts["account_id"].is_unique().all()
    assert accounts.filter(pl.col("account_id") == "a1")["email"].item() == "user1@x.ai"


@case(Loads({"accounts": (2, r"^duplicate key \(account_id\)$"),
             "account_devices": (1, r"^duplicate key \(account_id, device_id\)$")},
            _check_duplicates))  # fmt: skip
def duplicate_keys(root: Path) -> None:
    """a1 three times (first kept), and a repeated (account, device) pair."""
    build_valid(root)
    accounts = valid_tables()["accounts"]
    again = accounts.head(1).with_columns(pl.lit("other@z.com").alias("email"))
    write_table(root, "accounts", pl.concat([accounts, again, again]), "csv")
    devices = valid_tables()["account_devices"]
    write_table(root, "account_devices", pl.concat([devices, devices.tail(1)]), "csv")


def _check_first_loadable_kept(snap: Snapshot) -> None:
    assert snap.tables["accounts"].filter(pl.col("account_id") == "a1")["email"].item() == "2nd@x"


@case(Loads({"accounts": (1, r"^unparsable timestamp \(created_at\)$")},
            _check_first_loadable_kept))  # fmt: skip
def duplicate_after_bad_row(root: Path) -> None:
    """A bad a1 then a good a1: the good one loads, it is no duplicate of a rejected row."""
    build_valid(root)
    frame = as_text(valid_tables()["accounts"])
    good = frame.head(1).with_columns(pl.lit("2nd@x").alias("email"))
    bad = frame.head(1).with_columns(pl.lit("soon").alias("created_at"))
    write_table(root, "accounts", pl.concat([bad, good, frame.tail(5)]), "csv")


@case(
    Loads(
        {
            "account_ips": (1, r"^not in accounts \(account_id\)$"),
            "account_payments": (1, r"^not in payment_methods \(payment_method_id\)$"),
            "known_links": (1, r"^not in organizations \(org_id\)$"),
        }
    )
)
def dangling_references(root: Path) -> None:
    """Unknown account, payment method and organization."""
    build_valid(root)
    t = valid_tables()
    write_table(root, "account_ips", t["account_ips"].with_columns(
        pl.when(pl.col("requests") == 5).then(pl.lit("a99")).otherwise("account_id")
        .alias("account_id")
    ), "csv")  # fmt: skip
    write_table(root, "account_payments", t["account_payments"].with_columns(
        pl.when(pl.col("account_id") == "a4").then(pl.lit("pm9")).otherwise("payment_method_id")
        .alias("payment_method_id")
    ), "csv")  # fmt: skip
    write_table(root, "known_links", t["known_links"].with_columns(
        pl.when(pl.col("entity_type") == "ip").then(pl.lit("o7")).otherwise("org_id")
        .alias("org_id")
    ), "csv")  # fmt: skip


def _check_proxy_kept(snap: Snapshot) -> None:
    assert snap.tables["ips"]["proxy_id"].to_list() == ["p1", None, "p2"]
    assert snap.counts["proxies"] == type(snap.counts["proxies"])(0, 0, 0)


@case(Loads(check=_check_proxy_kept))
def proxies_absent(root: Path) -> None:
    """ips.proxy_id without a proxies table: kept, unchecked (a nullable reference)."""
    build_valid(root)
    (root / "proxies.csv").unlink()


def _check_header_only(snap: Snapshot) -> None:
    assert snap.tables["exchanges"].height == 0
    assert snap.tables["organizations"].height == 0
    assert snap.tables["exchanges"].schema["ts"] == pl.Datetime("us", "UTC")
    assert snap.counts["exchanges"].read == 0


@case(Loads(check=_check_header_only))
def header_only(root: Path) -> None:
    """Header-only exchanges.csv and a 0-row organizations.parquet are empty tables."""
    build_valid(root)
    t = valid_tables()
    (root / "exchanges.csv").write_text(",".join(t["exchanges"].columns) + "\n")
    (root / "known_links.csv").unlink()
    write_table(root, "organizations", t["organizations"].clear(), "parquet")


def _check_devices_utf8(snap: Snapshot) -> None:
    assert snap.rejected["devices"]["user_agent"].item() == "Mozilla/5.0 (Mac\ufffd)"


@case(Loads({"devices": (1, r"^invalid UTF-8 \(user_agent\)$"),
             "account_devices": (1, r"^refers to a rejected row of devices \(device_id\)$")},
            _check_devices_utf8))  # fmt: skip
def non_utf8_rows(root: Path) -> None:
    """One devices row with a Latin-1 byte: that row is rejected, the file is not."""
    build_valid(root)
    text = _csv_text(root, "devices").replace("curl/8.4", "Mozilla/5.0 (Mac@)")
    (root / "devices.csv").write_bytes(text.encode().replace(b"Mac@", b"Mac\xe9"))


def _check_float_ids(snap: Snapshot) -> None:
    assert snap.tables["accounts"]["account_id"].to_list()[:2] == ["1001", "1002"]
    ids = snap.tables["exchanges"]["account_id"]  # int ids in Parquet: text, coded
    assert ids.dtype == pl.Categorical and ids.cast(pl.String).str.contains(r"^[0-9]+$").all()


@case(Loads({"accounts": (1, r"^not an id: non-integral number \(account_id\)$")},
            _check_float_ids))  # fmt: skip
def parquet_float_account_ids(root: Path) -> None:
    """Float ids (pandas' nullable ints) become "1001"; 1003.5 is rejected; int ids elsewhere."""
    build_valid(root, fmt="parquet")
    t = valid_tables()
    ids = {f"a{i}": 1000.0 + i for i in range(1, 7)}
    ids["a3"] = 1003.5
    accounts = t["accounts"].with_columns(pl.col("account_id").replace_strict(ids))
    write_table(root, "accounts", accounts, "parquet")
    ints = {k: int(v) for k, v in ids.items() if k != "a3"}
    for name in ("exchanges", "account_ips", "account_devices", "account_payments"):
        frame = t[name].filter(pl.col("account_id") != "a3")
        frame = frame.with_columns(pl.col("account_id").replace_strict(ints))
        write_table(root, name, frame, "parquet")
    links = t["known_links"].filter(pl.col("entity_id") != "a3")
    write_table(root, "known_links", links, "parquet")


def _check_string_tokens(snap: Snapshot) -> None:
    tokens = snap.tables["exchanges"]["input_tokens"]
    assert tokens.dtype == pl.Int64
    assert tokens.head(3).to_list() == [12, 7, 12]


@case(Loads({"exchanges": (2, r"^not an integer \(input_tokens\)$")}, _check_string_tokens))
def parquet_string_tokens(root: Path) -> None:
    """Token counts as strings: "12", " 7 ", "12.0" parse; "lots" and "1.5" are rejected."""
    build_valid(root, fmt="parquet")
    frame = valid_tables()["exchanges"]
    tokens = ["12", " 7 ", "12.0", "lots", "1.5"] + [str(v) for v in frame["input_tokens"][5:]]
    frame = frame.with_columns(pl.Series("input_tokens", tokens))
    write_table(root, "exchanges", frame, "parquet")


def _check_parquet_times(snap: Snapshot) -> None:
    ts = snap.tables["exchanges"]["ts"]
    assert ts.dtype == pl.Datetime("us", "UTC")
    assert ts[0] == T0  # 10:30 in Berlin is 09:30 UTC
    created = snap.tables["accounts"]["created_at"]
    assert created[0] == datetime(2026, 1, 4, tzinfo=UTC)
    ips = snap.tables["ips"]
    assert ips["hosting"].to_list() == [True, False, None]


@case(Loads(check=_check_parquet_times))
def parquet_other_types(root: Path) -> None:
    """ns Datetime in Europe/Berlin, Date created_at, Int32 counts, 0/1 integer booleans."""
    build_valid(root, fmt="parquet")
    t = valid_tables()
    ex = t["exchanges"].with_columns(
        pl.col("ts").dt.convert_time_zone("Europe/Berlin").dt.cast_time_unit("ns"),
        pl.col("input_tokens", "output_tokens").cast(pl.Int32),
    )
    write_table(root, "exchanges", ex, "parquet")
    acc = t["accounts"].with_columns(pl.col("created_at").dt.date())
    write_table(root, "accounts", acc, "parquet")
    write_table(root, "ips", t["ips"].with_columns(pl.col("hosting").cast(pl.Int8)), "parquet")


@case(Loads({"exchanges": (5, r"^unparsable timestamp \(ts\)$")}, None), max_rejected_share=0.01)
def under_the_limit(root: Path) -> None:
    """5 of 1000 exchanges with bad timestamps: under the default 1 % limit."""
    _exchanges_with_bad_ts(root, 1000, 5)


def _check_normalised(snap: Snapshot) -> None:
    acc = snap.tables["accounts"]
    assert acc["plan"].to_list()[:2] == ["free", "pro"]
    assert acc["signup_ip"][1] == "2001:db8::1"
    links = snap.tables["known_links"]
    assert links["entity_id"].to_list() == ["64500", "fpA", "y.org", "2001:db8::1", "a3"]
    assert links["confidence"].to_list() == [0.9, 1.0, 0.7, 1.0, 0.6]


@case(Loads(check=_check_normalised))
def normalised_values(root: Path) -> None:
    """Loose spellings that must load normalised: choices, IPv6, ASN, email domain, confidence."""
    build_valid(root)
    t = valid_tables()
    acc = as_text(t["accounts"]).with_columns(
        pl.Series("plan", [" FREE", "Pro ", "team", "API", None, "free"]),
        pl.Series(
            "signup_ip", ["203.0.113.5", "2001:DB8:0:0::1", None, " 198.51.100.7", None, None]
        ),
    )
    write_table(root, "accounts", acc, "csv")
    links = as_text(t["known_links"]).with_columns(
        pl.Series("entity_type", ["ASN", "fingerprint", "Email_Domain", "ip", "account"]),
        pl.Series("entity_id", ["AS64500", "fpA", "@Y.org", "2001:0db8::0001", "a3"]),
        pl.Series("confidence", ["0.9", None, "0.7", "1", " 0.6 "]),
    )
    write_table(root, "known_links", links, "csv")


@case(
    Loads(
        {
            "accounts": (2, r"^not one of free, pro, team, api \(plan\)$|^missing value"),
            "account_ips": (2, r"^negative value \(requests\)$|^last_seen before first_seen"),
            "known_links": (3, r"^out of range 0\.\.1 \(confidence\)$|^not an ASN|^not an email"),
        }
    )
)
def row_rules(root: Path) -> None:
    """Bad choice, empty email, negative count, last_seen < first_seen, bad confidence/ASN/email."""
    build_valid(root)
    t = valid_tables()
    acc = as_text(t["accounts"])
    more = acc.head(2).with_columns(
        pl.Series("account_id", ["a7", "a8"]),
        pl.Series("plan", ["gold", "pro"]),
        pl.Series("email", ["u7@x.ai", ""]),
    )
    write_table(root, "accounts", pl.concat([acc, more]), "csv")
    ips = t["account_ips"].with_columns(
        pl.Series("requests", [120, -1, 5, 0]),
        pl.Series("last_seen", [_ts(4), _ts(5), _ts(1), _ts(7)]),
    )
    write_table(root, "account_ips", ips, "csv")
    links = t["known_links"].with_columns(
        pl.Series("confidence", [1.5, 1.0, 0.7, 1.0, 0.6]),
        pl.Series("entity_id", ["64500", "fpA", "a@b@c", "2001:db8::1", "a3"]),
    )
    nope = links.head(1).with_columns(
        pl.lit("AS-NOPE").alias("entity_id"), pl.lit(0.5).alias("confidence")
    )
    write_table(root, "known_links", pl.concat([links, nope]), "csv")


LONG_ACCOUNT = "a" + "x" * 10_000  # a 10 kB id: the embedded store took it, Neo4j could not index it


def _check_long_ids(snap: Snapshot) -> None:
    assert "d" * MAX_ID_LENGTH in snap.tables["devices"]["device_id"].to_list()  # at the limit
    for name, frame in snap.tables.items():
        for column in TABLES[name].columns:
            if column.identifier and frame.height:
                lengths = frame[column.name].drop_nulls().cast(pl.String).str.len_chars()
                assert (lengths <= MAX_ID_LENGTH).all(), (name, column.name)


_TOO_LONG = rf"^longer than {MAX_ID_LENGTH} characters \(\w+\)$"


@case(Loads({"accounts": (2, _TOO_LONG), "payment_methods": (1, _TOO_LONG),
             "devices": (1, _TOO_LONG), "account_devices": (1, _TOO_LONG),
             "exchanges": (2, _TOO_LONG), "organizations": (1, _TOO_LONG),
             "known_links": (2, _TOO_LONG)},
            _check_long_ids))  # fmt: skip
def long_identifiers(root: Path) -> None:
    """Ids longer than MAX_ID_LENGTH in every kind of key column are rejected rows, so both
    stores take the same input; an id of exactly the limit loads."""
    build_valid(root)
    t = valid_tables()
    at_limit, over = "d" * MAX_ID_LENGTH, "d" * (MAX_ID_LENGTH + 1)
    acc = t["accounts"]
    extra = acc.head(2).with_columns(
        pl.Series("account_id", [LONG_ACCOUNT, "a8"]),
        pl.Series("email", ["long@x.ai", "u" * 300 + "@x.ai"]),
    )
    write_table(root, "accounts", pl.concat([acc, extra]), "parquet")
    pm = t["payment_methods"]
    write_table(root, "payment_methods", pl.concat(
        [pm, pm.head(1).with_columns(pl.lit("pm9").alias("payment_method_id"),
                                     pl.lit("F" * 5000).alias("fingerprint"))]), "parquet")
    dev = t["devices"]
    write_table(root, "devices", pl.concat(
        [dev, dev.head(2).with_columns(pl.Series("device_id", [at_limit, over]))]), "parquet")
    ad = t["account_devices"]
    write_table(root, "account_devices", pl.concat(
        [ad, ad.head(2).with_columns(pl.Series("account_id", ["a6", "a6"]),
                                     pl.Series("device_id", [at_limit, over]))]), "parquet")
    ex = t["exchanges"]
    write_table(root, "exchanges", pl.concat(
        [ex, ex.head(2).with_columns(pl.Series("account_id", [LONG_ACCOUNT, "a1"]),
                                     pl.Series("prompt_hash", ["h1", "h" * 1000]))]), "parquet")
    org = t["organizations"]
    write_table(root, "organizations", pl.concat(
        [org, org.head(1).with_columns(pl.lit("o" * 300).alias("org_id"))]), "parquet")
    kl = t["known_links"]
    write_table(root, "known_links", pl.concat(
        [kl, kl.head(2).with_columns(pl.Series("entity_type", ["account", "prompt_hash"]),
                                     pl.Series("entity_id", [LONG_ACCOUNT, "h2"]),
                                     pl.Series("org_id", ["o1", "o" * 300]))]), "parquet")


def _check_blank_lines(snap: Snapshot) -> None:
    assert snap.counts["accounts"].read == 6


@case(Loads(check=_check_blank_lines))
def blank_lines_and_crlf(root: Path) -> None:
    """CRLF line ends, a BOM, padded header names and blank lines: all tolerated."""
    build_valid(root)
    lines = _csv_text(root, "accounts").splitlines()
    lines[0] = " Account_ID ," + lines[0].split(",", 1)[1]
    text = "\ufeff" + "\r\n".join([*lines[:3], "", *lines[3:], "", ""]) + "\r\n"
    (root / "accounts.csv").write_bytes(text.encode())


def _check_nan(snap: Snapshot) -> None:
    assert snap.tables["known_links"]["confidence"].is_not_nan().all()


@case(Loads({"known_links": (1, r"^not a finite number \(confidence\)$")}, _check_nan))
def parquet_nan_confidence(root: Path) -> None:
    """NaN confidence is rejected, not defaulted to 1.0."""
    build_valid(root, fmt="parquet")
    links = valid_tables()["known_links"].with_columns(
        pl.Series("confidence", [0.9, float("nan"), 0.7, 1.0, 0.6])
    )
    write_table(root, "known_links", links, "parquet")


def _check_extras(snap: Snapshot) -> None:
    acc = snap.tables["accounts"]
    assert acc.columns[-2:] == ["risk_note", "reason"]
    assert acc.schema["risk_note"] == pl.String
    rej = snap.rejected["accounts"]
    assert rej.columns[-3:] == ["risk_note", "reason", "ingest_reason"]
    ex = snap.tables["exchanges"]
    assert ex.schema["latency_ms"] == pl.Float64 and ex.schema["tags"] == pl.List(pl.String)
    bad = snap.rejected["exchanges"].row(0, named=True)
    assert (bad["tags"], bad["latency_ms"]) == ('["x"]', "12.5")
    assert bad["ts"] == "2026-01-05T09:30:00+00:00"


@case(
    Loads(
        {
            "accounts": (1, r"^missing value \(account_id\)$"),
            "exchanges": (1, r"^negative value \(input_tokens\)$"),
        },
        _check_extras,
    )
)
def extra_columns(root: Path) -> None:
    """Extra columns are kept with their type; one is even called ``reason``."""
    build_valid(root)
    acc = as_text(valid_tables()["accounts"]).with_columns(
        pl.lit("note").alias("risk_note"), pl.lit("why").alias("reason")
    )
    acc = pl.concat([acc, acc.head(1).with_columns(pl.lit(None, pl.String).alias("account_id"))])
    write_table(root, "accounts", acc, "csv")
    ex = valid_tables()["exchanges"].with_columns(
        pl.lit(12.5).alias("latency_ms"), pl.concat_list(pl.lit("x")).alias("tags")
    )
    ex = pl.concat([ex, ex.head(1).with_columns(pl.lit(-1, pl.Int64).alias("input_tokens"))])
    write_table(root, "exchanges", ex, "parquet")


def _check_binary(snap: Snapshot) -> None:
    assert snap.tables["devices"]["device_id"].to_list() == ["d1", "d2", "d3"]


@case(Loads(check=_check_binary))
def parquet_binary_strings(root: Path) -> None:
    """Strings stored as Parquet BYTE_ARRAY without the UTF8 annotation (old Spark/Hive)."""
    build_valid(root, fmt="parquet")
    devices = valid_tables()["devices"].with_columns(pl.col("device_id").cast(pl.Binary))
    write_table(root, "devices", devices, "parquet")


def _check_mixed_ts(snap: Snapshot) -> None:
    ts = snap.tables["exchanges"]["ts"].to_list()
    assert ts[:6] == [
        T0,
        T0,
        T0 + timedelta(microseconds=250_000),
        T0,
        datetime.combine(date(2026, 1, 5), datetime.min.time(), UTC),
        T0,
    ]


@case(Loads(check=_check_mixed_ts))
def mixed_timestamp_spellings(root: Path) -> None:
    """ISO-8601 written six ways in one column, all meaning the same UTC instant (or midnight)."""
    build_valid(root)
    frame = as_text(valid_tables()["exchanges"])
    ts = frame["ts"].to_list()
    ts[:6] = [
        "2026-01-05T09:30:00Z",
        "2026-01-05 11:30:00+02:00",
        "2026-01-05T09:30:00.25",
        "2026-01-05T04:30-0500",
        "2026-01-05",
        " 2026-01-05t09:30:00z ",
    ]
    write_table(root, "exchanges", frame.with_columns(pl.Series("ts", ts)), "csv")


def materialise(out: Path) -> None:
    """Write every case to ``out/<name>`` with its expected outcome in EXPECTED.txt."""
    for c in CASES:
        root = out / c.name
        root.mkdir(parents=True, exist_ok=True)
        c.build(root)
        (root / "EXPECTED.txt").write_text(
            f"{c.doc}\nmax_rejected_share={c.max_rejected_share}\n{c.expect!r}\n"
        )


if __name__ == "__main__":
    materialise(Path(sys.argv[1]))
