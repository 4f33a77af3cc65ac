"""Group-level lockstep: fleets whose members are pairwise unremarkable.

A careful operator shares no card or device between accounts, rents residential or
mobile exits that ordinary people use too, and fires its accounts a few at a time.
Two given members then share a minute or two in forty days, so no *pair* is
suspicious; the *group* is: hundreds of accounts that keep turning up a few at a time
in the same minutes on one network service, far more often than that service's own
traffic at that hour explains.

Method: dense blocks of the account x time x network tensor, found per network value
by per-mode thresholding in the manner of D-Cube (Shin et al., WSDM 2017) and judged
with the CrossSpot suspiciousness (Jiang et al., 2015: the Poisson surprise of a
block's mass against what its volume would hold by chance). What we changed, and why:

1. Cells are (network value, time bucket) at a few scales (5 and 15 minutes:
   operators schedule in windows with minutes of jitter). A cell is *hot* when its
   distinct accounts are surprising against that value's own mean occupancy at that
   hour of day: a carrier NAT or a busy proxy exit holds many ordinary users every
   minute and yields no hot cells, a quiet rented service holding six accounts at
   once does (``-log10 P(Poisson(lambda) >= n)``). The mean is estimated again
   without the hot cells (``LockstepParams.baseline_rounds``): a campaign that is
   most of a rented service's traffic would otherwise set its own baseline.
2. Seeds: accounts that spend most of their activity on a value in its hot cells,
   grouped by the hot cells they share (connected components). Blocks are found
   one pass after another, the members of earlier ones taken out (as D-Cube finds
   its blocks), so that a second operation on the same service, joined to the first
   by a chance shared minute, gets a block of its own on the next pass.
3. Members: an account belongs to a block when its hits on the block's cells (hot
   cells holding two other members) are more than its own timeline explains, and
   better explained by the block than by that timeline. The null is drawn from the
   snapshot: the account's own buckets shifted to other days of the same kind
   (weekday or weekend: its daily and weekly rhythm stay, any coordination goes) on
   which it existed, in closed form: a bucket at time of day t lands in a block cell
   with the share of such days on which the block has a cell at t. An account signed
   up in the snapshot's last weeks could not have met a wave before; moved to any day
   of the snapshot, its neighbours' cells would be missing from most of them and its
   real hits would look many, so a crowd of recent sign-ups on a big ISP (a tool's
   launch) became a block "1 in 10^100 by chance". An account signed up in a burst or
   a surge (``linking.SignUps.born``) is moved over the whole snapshot, as one older
   than it: when it was born is part of what its operator coordinated. The binomial
   tail of its hits against that expectation is its surprise. The block's own rate is
   the share of its members' sessions that meet a wave, and the log10 likelihood
   ratio of the account's k hits in n sessions at that rate against its null rate is
   its support (Neyman-Pearson, the two binomials of a two-component mixture): three
   hits in thirty sessions, a bystander on the same service, are surprising against a
   null of one in twenty but far likelier at that null than at the members' four in
   ten, so the bystander stays out. (Support alone, with no surprise, as the criterion
   let in more of the careful campaigns' sparse accounts, and more of a second
   operation on the same service with them: two operations came out as one fleet.)
   The test is repeated (the block and its rate re-derived from its members) so that
   a block does not depend on where its seeds happened to be. Trials and hits are
   counted per session (an hour of an account on a network), not per bucket: the
   minutes of one long session are one chance to meet a wave, not thirty.
4. A block is kept when its total hits against the total expected by chance (the
   sum of its members' null expectations) is surprising: ``1 in 10^k by chance``.
   Cron jobs and daily stand-ups repeat at the same time every day, so the day shift
   keeps them coordinated in the null and they are not blocks; one-off bursts (an
   onboarding day, an evaluation run) have no repetition to accumulate hits.

5. A second mode for proxy traffic: the service and the customer's device time zone
   (``split_by_zone``). A campaign that leaks its zone behind a busy service is a
   quiet corner of it, where waves too small to stand out against the whole service
   are hot cells. The zone values are tested beside the plain service, and an
   account is in one block at most: found on the service, it is taken on its zones
   too (one observation).

The detector reports a network value as the data names it (a proxy provider, an ASN,
a /24, a provider and a zone) and never names an organization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.special import betainc, gammainc

from attribution.contracts.settings import LockstepParams
from attribution.stages.activity import PROXY_PREFIX

MINUTES_PER_DAY = 1440
ROUND = 6  # decimals of the surprises the detector decides on and reports
ZONE = "|tz:"  # joins a proxy service and a device time zone into one network value
_HIGH = 1 << 32  # packs two non-negative codes below 2^31 into one Int64 key


@dataclass(frozen=True)
class Blocks:
    """What the detector found: one row per member and one per block.

    ``members``: account_id, block, surprise (-log10 chance of the account's hits).
    ``blocks``: block, size, network, waves (distinct buckets where at least
    ``min_occupancy`` members acted together), days (distinct days of those waves),
    bucket_minutes, log10_chance (the block's hits against its null, as -log10).
    """

    members: pl.DataFrame
    blocks: pl.DataFrame

    @classmethod
    def empty(cls) -> Blocks:
        return cls(
            members=pl.DataFrame(schema={"account_id": pl.String, "block": pl.Int64,
                                         "surprise": pl.Float64}),
            blocks=pl.DataFrame(schema={"block": pl.Int64, "size": pl.UInt32, "network": pl.String,
                                        "waves": pl.UInt32, "days": pl.UInt32,
                                        "bucket_minutes": pl.Int64, "log10_chance": pl.Float64}),
        )


def describe_network(network: str) -> str:
    """A block's network in a sentence: a proxy provider or an ASN by name, a /24 (an
    address range of people's homes or offices) not at all; and the device time zone
    when the block was found among one zone's customers of a proxy service."""
    network, _, zone = network.partition(ZONE)
    kind, _, value = network.partition(":")
    if kind == "proxy":
        where = f"the same proxy service ({value})"
    elif kind == "asn":
        where = f"the same network (AS{value})"
    else:
        where = "the same network range"
    return f"{where} from devices set to {zone}" if zone else where


def split_by_zone(act: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """The activity table with a second value for proxy traffic: the service and the
    account's device zone (``proxy:X|tz:Y``), for accounts whose zone is not the one most
    of the service's traffic comes from.

    A proxy service's exits sit in a few countries while its customers' devices keep
    their own zones; an operator that leaks its zone (Asia/Shanghai behind US exits)
    shares that value with few others, so its waves stand out against a far quieter
    baseline than the whole service's. The service's own majority zone adds nothing
    the service does not already say, and ISPs and datacenters are not split: their
    users are mostly of one country, and a minority zone there isolates small closed
    groups (a team abroad, one company's bots) that act together every day by design."""
    on_proxy = act.filter(pl.col("network").str.starts_with(PROXY_PREFIX)).join(zones, on="account_id")
    if on_proxy.height == 0:
        return act
    modal = (on_proxy.group_by("network", "timezone").agg(pl.len().alias("c"))
             .sort("c", "timezone", descending=[True, False])
             .group_by("network", maintain_order=True).first()
             .select("network", pl.col("timezone").alias("modal")))
    zoned = (pl.col("network") + ZONE + pl.col("timezone")).alias("network")
    extra = (on_proxy.join(modal, on="network").filter(pl.col("timezone") != pl.col("modal"))
             .select("account_id", "minute", zoned))
    return pl.concat([act, extra.cast(act.schema)])


def poisson_surprise(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """-log10 P(Poisson(lam) >= k)."""
    k = np.asarray(k, dtype=np.float64)
    lam = np.maximum(np.asarray(lam, dtype=np.float64), 1e-12)
    p = np.where(k <= 0, 1.0, gammainc(np.maximum(k, 1e-9), lam))
    return -np.log10(np.maximum(p, 1e-300))


def binomial_surprise(k: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """-log10 P(Binomial(n, q) >= k)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    p = np.where(k <= 0, 1.0, betainc(np.maximum(k, 1e-9), np.maximum(n - k + 1.0, 1e-9), q))
    return -np.log10(np.maximum(p, 1e-300))


def _pack(high: str, low: str, name: str) -> pl.Expr:
    """Two non-negative codes below 2^31 as one Int64 key: polars joins and groups on one
    integer column faster than on several (it row-encodes multi-column keys)."""
    return (pl.col(high).cast(pl.Int64) * _HIGH + pl.col(low)).alias(name)


def _unpack(key: str, high: str, low: str) -> tuple[pl.Expr, pl.Expr]:
    """The two Int32 codes of a ``_pack`` key."""
    return (pl.col(key) // _HIGH).cast(pl.Int32).alias(high), (pl.col(key) % _HIGH).cast(pl.Int32).alias(low)


@dataclass(frozen=True)
class _Scale:
    """One time scale: every (account, network, bucket) and the hot cells among them."""

    minutes: int
    occupied: pl.DataFrame  # acc, net, b
    hot: pl.DataFrame       # acc, net, b: the occupied buckets that are hot cells
    buckets: pl.DataFrame   # acc, net, m: buckets per account and network
    sessions: pl.DataFrame  # acc, net, trials: distinct sessions (see LockstepParams.session_minutes)
    per_session: int        # buckets of this scale per session

    def on(self, nets: pl.DataFrame) -> _Scale:
        """The same scale on some networks only (``nets``: net): a pass tests members on
        the networks of its seeds, a fraction of the rows at a million accounts."""
        def keep(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col("net").is_in(nets["net"].implode()))
        return _Scale(minutes=self.minutes, occupied=keep(self.occupied), hot=keep(self.hot),
                      buckets=keep(self.buckets), sessions=keep(self.sessions),
                      per_session=self.per_session)


def _scale(act: pl.DataFrame, minutes: int, days: int, p: LockstepParams,
           finer: _Scale | None = None) -> _Scale:
    """Occupied buckets and hot cells at one scale; from a ``finer`` scale that divides this
    one when there is one (its buckets are far fewer rows than the minutes)."""
    # Lazy plans: polars runs a unique or group-by over tens of millions of rows about
    # twice as fast through its query engine as eagerly (measured at 200k accounts).
    if finer is not None and minutes % finer.minutes == 0:
        occ = finer.occupied.lazy().select(
            "acc", "net", pl.col("b") // (minutes // finer.minutes)).unique().collect()
    else:
        occ = _distinct_buckets(act, minutes)
    per_hour = max(60 // minutes, 1)
    cells = occ.lazy().group_by(_pack("net", "b", "nb")).agg(pl.len().alias("n")).select(
        *_unpack("nb", "net", "b"), "n").with_columns((pl.col("b") * minutes // 60 % 24).alias("h")).collect()
    slots = days * per_hour
    # The hourly sums over every cell, once; each round takes the hot cells' share out
    # and tests only the cells full enough to be hot (most hold one or two accounts).
    totals = cells.group_by("net", "h").agg(pl.col("n").sum().alias("total"))
    full = cells.filter(pl.col("n") >= p.min_occupancy).join(totals, on=["net", "h"])
    hot = full.clear()
    for _ in range(p.baseline_rounds + 1):
        out = hot.group_by("net", "h").agg(pl.col("n").sum().alias("out_n"), pl.len().alias("out_k"))
        judged = full.join(out, on=["net", "h"], how="left").with_columns(
            ((pl.col("total") - pl.col("out_n").fill_null(0))
             / (slots - pl.col("out_k").fill_null(0)).clip(lower_bound=1)).alias("lam"))
        surprise = poisson_surprise(judged["n"].to_numpy(), judged["lam"].to_numpy())
        hot = judged.filter(pl.Series(surprise >= p.cell_surprise)).select(full.columns)
    per_session = max(p.session_minutes // minutes, 1)
    counts = occ.lazy().group_by(_pack("acc", "net", "an")).agg(
        pl.len().alias("m"), (pl.col("b") // per_session).n_unique().alias("trials")).select(
        *_unpack("an", "acc", "net"), "m", "trials").collect()
    return _Scale(
        minutes=minutes,
        occupied=occ,
        hot=occ.lazy().with_columns(_pack("net", "b", "nb")).join(
            hot.lazy().select(_pack("net", "b", "nb")), on="nb", how="semi").drop("nb").collect(),
        buckets=counts.select("acc", "net", "m"),
        sessions=counts.select("acc", "net", "trials"),
        per_session=per_session,
    )


def _distinct_buckets(act: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """(acc, net, b): the distinct buckets of ``minutes`` each account was active in on each
    network. The three codes packed into one Int64 where their widths fit (polars finds the
    distinct values of one integer column in about half the time of three columns)."""
    bucket = pl.col("minute") // minutes
    widths = [max(int(act[c].max()), 1).bit_length()  # type: ignore[arg-type]
              for c in ("acc", "net")] + [max(int(act["minute"].max()) // minutes, 1).bit_length()]  # type: ignore[arg-type]
    if sum(widths) > 62:
        return act.lazy().select("acc", "net", bucket.alias("b")).unique().collect()
    net_b, b = 1 << (widths[1] + widths[2]), 1 << widths[2]
    key = pl.col("acc").cast(pl.Int64) * net_b + pl.col("net").cast(pl.Int64) * b + bucket.cast(pl.Int64)
    return act.lazy().select(key.alias("k")).unique().select(
        (pl.col("k") // net_b).cast(pl.Int32).alias("acc"),
        (pl.col("k") // b % (net_b // b)).cast(pl.Int32).alias("net"),
        (pl.col("k") % b).cast(pl.Int32).alias("b")).collect()


def _seeds(s: _Scale, p: LockstepParams, taken: pl.DataFrame) -> pl.DataFrame:
    """(acc, net, block): accounts mostly in hot cells, grouped by the hot cells they share;
    accounts already in a block (``taken``: acc, net) are not seeds again."""
    an = _pack("acc", "net", "an")
    seeds = (s.hot.lazy().with_columns(an).join(taken.lazy().select(an), on="an", how="anti")
             .group_by("an").agg(pl.len().alias("k")).join(s.buckets.lazy().select(an, "m"), on="an")
             .filter((pl.col("k") >= p.seed_hits) & (pl.col("k") >= p.seed_share * pl.col("m"))).collect())
    if seeds.height < p.min_block:
        return pl.DataFrame(schema={"acc": pl.Int32, "net": pl.Int32, "block": pl.Int64})
    nodes = seeds.select(*_unpack("an", "acc", "net")).sort("acc", "net").with_row_index("node")
    # a cell's number is its rank among the seeds' hot cells (any numbering joins the same nodes)
    inc = (s.hot.lazy().with_columns(an).join(nodes.lazy().select(an, "node"), on="an")
           .select("node", (_pack("net", "b", "nb").rank("dense") - 1).alias("cell")).collect())
    # Nodes sharing a cell are joined through it: the components of the node-cell graph,
    # read on its nodes, are those of the node-node graph of shared cells, without
    # squaring the incidence (a busy cell of k seeds would give k * k pairs).
    n, cells = nodes.height, int(inc["cell"].max()) + 1  # type: ignore[arg-type]
    m = sp.csr_matrix((np.ones(inc.height), (inc["node"].to_numpy(), n + inc["cell"].to_numpy())),
                      shape=(n + cells, n + cells))
    _, label = connected_components(m, directed=False)
    label = label[:n]
    size = np.bincount(label)
    # A block is named by its first (account, network) node, not by the component's
    # label: the labels follow the row order of a group-by, which differs from run to
    # run, and ties between blocks are broken by name. (Its first account alone is not
    # a name: a service's block and its zone's can share their first account.)
    return (nodes.with_columns(pl.Series("comp", label)).filter(pl.Series(size[label] >= p.min_block))
            .select("acc", "net", pl.col("node").min().over("comp").cast(pl.Int64).alias("block")))


def _member_tests(s: _Scale, members: pl.DataFrame, calendar: pl.DataFrame,
                  first: pl.DataFrame) -> pl.DataFrame:
    """(block, acc, net, hits, expected, trials, surprise, support) for every account with a
    hit on a block (``support``: see ``support``, against the block's rate among ``members``).

    A block's cells are the hot cells holding two of its members besides the one tested;
    ``expected`` is the account's hits with its own buckets moved to another day of the
    same kind (a weekday to a weekday, a weekend day to a weekend day): daily and weekly
    rhythms stay (office hours, cron jobs that skip the weekend), coordination goes. An
    account born inside the snapshot (``first``: acc, the day it was born) moves only to
    days it existed on."""
    per_day = MINUTES_PER_DAY // s.minutes
    # Keys packed into one Int64 (``_pack``; block names, the seeds' node numbers, are below
    # 2^31 too). A block lies on one network (its seeds share cells, and cells are per
    # network), so block and account name a test.
    acc_net, net_b = _pack("acc", "net", "an"), _pack("net", "b", "nb")
    block_acc = _pack("block", "acc", "ba")
    # A bucket's kind of day and time of day, gathered from the calendar by day (days are
    # numbered from 0): far cheaper than joining the calendar to millions of buckets.
    day, tod = pl.col("b") // per_day, pl.col("b") % per_day
    by_day = calendar.sort("day")
    kind = pl.lit(by_day["kind"].cast(pl.Int64)).gather(day)
    slot = (pl.col("block") * (2 * per_day) + kind * per_day + tod).alias("slot")
    days_of_kind = pl.lit(by_day["days_of_kind"]).gather(day)

    # One lazy plan (as in ``_scale``): the joins over every occupied bucket run in
    # polars' query engine without materialising what is only grouped again.
    cells = (s.hot.lazy().join(members.lazy(), on=["acc", "net"])
             .group_by("block", "net", "b").agg(pl.len().alias("nm")).filter(pl.col("nm") >= 2)
             .collect().lazy())
    # (a block's cells are hot cells, so the hot buckets are all the buckets that can hit)
    hits = (
        s.hot.lazy().select("acc", "b", net_b).join(cells.select(net_b, "block", "net", "nm"), on="nb")
        .with_columns(block_acc)
        .join(members.lazy().select(block_acc, pl.lit(1).alias("me")), on="ba", how="left")
        .filter(pl.col("nm") - pl.col("me").fill_null(0) >= 2)
        .group_by("ba").agg(pl.col("block", "acc", "net").first(),
                            (pl.col("b") // s.per_session).n_unique().alias("hits"))
        .select("block", "acc", "net", "hits")
        .collect().with_row_index("h")
    )
    # Only an account with a hit can be a member: the null is computed for those alone
    # (every bucket of theirs on the network, against every block they hit).
    on_net = s.occupied.lazy().select(acc_net, "acc", "b").join(
        hits.lazy().select(acc_net, "h", "block"), on="an")
    # Accounts that existed from the snapshot's start: a bucket lands in a block cell with
    # the share of the days of its kind on which the block has a cell at that time of day.
    slot_share = cells.group_by(slot).agg((pl.len() / days_of_kind.first()).alias("share"))
    shares = [on_net.join(first.lazy(), on="acc", how="anti").with_columns(slot)
              .join(slot_share, on="slot").select("h", "b", "share")]
    # Accounts born inside it: the same share over the days since they were born
    # (``_lifetime_share``); a small part of the rows at a million accounts.
    young = on_net.join(first.lazy(), on="acc").with_columns(slot, kind.alias("kind")).select(
        "h", "b", "slot", "kind", "first").collect()
    if young.height:
        cell_days = cells.select(slot, day.alias("day")).collect()
        shares.append(young.select("h", "b", pl.Series("share", _lifetime_share(
            cell_days, young, by_day))).lazy())
    session = (pl.col("h").cast(pl.Int64) * _HIGH + pl.col("b") // s.per_session).alias("hs")
    expected = (
        pl.concat(shares)
        .group_by(session).agg(pl.col("share").sum().clip(upper_bound=1.0))
        .group_by((pl.col("hs") // _HIGH).cast(pl.UInt32).alias("h"))
        .agg(pl.col("share").sum().alias("expected"))
    )
    t = (hits.lazy().join(expected, on="h", how="left")
         .with_columns(pl.col("expected").fill_null(0.0), acc_net)
         .join(s.sessions.lazy().select(acc_net, "trials"), on="an")
         .select("block", "acc", "net", "hits", "expected", "trials").collect())
    floor = 1.0 / float(calendar["days_of_kind"].max())  # type: ignore[arg-type]
    q = np.clip(np.maximum(t["expected"].to_numpy(), floor) / t["trials"].to_numpy(), 0.0, 1.0)
    # The block's own rate: the share of its members' sessions that meet a wave.
    rate = (t.join(members, on=["acc", "net", "block"]).group_by("block")
            .agg((pl.col("hits").sum() / pl.col("trials").sum()).alias("rate")))
    r = t.select("block").join(rate, on="block", how="left")["rate"].fill_null(0.0).to_numpy()
    k, n = t["hits"].to_numpy(), t["trials"].to_numpy()
    return t.with_columns(
        pl.Series("surprise", binomial_surprise(k, n, q)).round(ROUND),
        pl.Series("support", support(k, n, r, q)).round(ROUND),
    )


def _lifetime_share(cells: pl.DataFrame, rows: pl.DataFrame, by_day: pl.DataFrame) -> np.ndarray:
    """Per bucket row (slot, kind, first): the share of the days of its kind since its
    account was born (``first``, a day) on which the block has a cell at that slot
    (``cells``: slot, day)."""
    n_days = by_day.height
    key = np.sort(cells["slot"].to_numpy().astype(np.int64) * n_days + cells["day"].to_numpy())
    slot = rows["slot"].to_numpy().astype(np.int64)
    first = rows["first"].to_numpy().astype(np.int64)
    count = np.searchsorted(key, (slot + 1) * n_days) - np.searchsorted(key, slot * n_days + first)
    # the days of each kind from each day on (a suffix count per kind)
    kinds = by_day["kind"].cast(pl.Int64).to_numpy()
    left = np.zeros((2, n_days + 1), np.int64)
    for k in (0, 1):
        left[k, :n_days] = np.cumsum((kinds == k)[::-1])[::-1]
    return count / np.maximum(left[rows["kind"].to_numpy(), first], 1)


def support(k: np.ndarray, n: np.ndarray, r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """log10 of the likelihood ratio of k hits in n sessions at the block's rate ``r``
    against the account's own null rate ``q`` (no ratio where r <= q: no support)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-9, 1.0 - 1e-9)
    r = np.clip(np.asarray(r, dtype=np.float64), q, 1.0 - 1e-9)
    return (k * np.log10(r / q) + (n - k) * np.log10((1.0 - r) / (1.0 - q)))


def _calendar(first_day: int, days: int) -> pl.DataFrame:
    """day (from the first) -> kind (weekend or not) and how many days of that kind there are."""
    day = np.arange(days)
    weekend = (first_day + day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    cal = pl.DataFrame({"day": day.astype(np.int64), "kind": weekend})
    return cal.join(cal.group_by("kind").agg(pl.len().alias("days_of_kind")), on="kind")


def find_blocks(act: pl.DataFrame, p: LockstepParams, zones: pl.DataFrame | None = None,
                born: pl.DataFrame | None = None) -> Blocks:
    """Lockstep blocks in an activity table (``ACTIVITY_SCHEMA``); with ``zones``
    (account_id, timezone: ``features.account_zones``), proxy traffic is also tested per
    device zone (``split_by_zone``); with ``born`` (account_id, minute: a sign-up), an
    account's null moves its buckets only to days from then on (``_member_tests``)."""
    if act.height == 0 or not p.scales:
        return Blocks.empty()
    if zones is not None and p.zones:
        act = split_by_zone(act, zones)
    accounts = act.select(pl.col("account_id").unique().sort()).with_row_index("acc")
    networks = act.select(pl.col("network").unique().sort()).with_row_index("net")
    start = int(act["minute"].min()) // MINUTES_PER_DAY * MINUTES_PER_DAY  # type: ignore[arg-type]
    coded = act.lazy().join(accounts.lazy(), on="account_id").join(networks.lazy(), on="network").select(
        pl.col("acc").cast(pl.Int32), pl.col("net").cast(pl.Int32),
        (pl.col("minute") - start).cast(pl.Int32).alias("minute")).collect()
    days = int(coded["minute"].max()) // MINUTES_PER_DAY + 1  # type: ignore[arg-type]
    scales: list[_Scale] = []
    for minutes in sorted(p.scales):
        scales.append(_scale(coded, minutes, days, p, scales[-1] if scales else None))
    calendar = _calendar(start // MINUTES_PER_DAY, days)
    # (acc, first): the accounts born after the snapshot's first day, and that day
    first = (accounts.join(born, on="account_id").select(
        pl.col("acc").cast(pl.Int32),
        ((pl.col("minute") - start) // MINUTES_PER_DAY).clip(0, days - 1).cast(pl.Int64)
        .alias("first")).filter(pl.col("first") > 0) if born is not None
        else pl.DataFrame(schema={"acc": pl.Int32, "first": pl.Int64}))
    # every network value and the service it splits (itself when it is not a zone of one)
    code = networks.select(pl.col("net").cast(pl.Int32), "network")
    roots = code.with_columns(pl.col("network").str.split(ZONE).list.first()).join(
        code.rename({"net": "root"}), on="network").select("net", "root")
    finals = []
    taken = pl.DataFrame(schema={"acc": pl.Int32, "net": pl.Int32})
    for n in range(p.passes):
        found = _one_pass(scales, calendar, p, taken, first)
        if found is None:
            break
        # names stay apart across passes: a pass has fewer seed nodes than activity rows
        found = found.with_columns(pl.col("block") + n * coded.height).join(roots, on="net")
        finals.append(found)
        # a member is taken on its service and on every zone of it (one observation)
        taken = pl.concat([taken, found.select("acc", "root").join(roots, on="root").select("acc", "net")])
    if not finals:
        return Blocks.empty()
    final = pl.concat(finals)
    judged = final.group_by("block").agg(
        pl.len().alias("size"), pl.col("hits").sum(), pl.col("expected").sum(), pl.col("net").first())
    # Rounded: sums of floats over a group come in no fixed order, and a run must be
    # repeatable to the last digit it reports.
    judged = judged.with_columns(pl.Series("log10_chance", poisson_surprise(
        judged["hits"].to_numpy(), judged["expected"].to_numpy() + 1.0)).round(ROUND))
    kept = judged.filter((pl.col("size") >= p.min_block) & (pl.col("log10_chance") >= p.block_surprise))
    if kept.height == 0:
        return Blocks.empty()
    waves = _waves(scales[0], final.join(kept.select("block"), on="block"), p)
    blocks = (kept.join(waves, on="block", how="left").join(networks, on="net")
              .with_columns(pl.col("waves").fill_null(0), pl.col("days").fill_null(0))
              .select("block", pl.col("size").cast(pl.UInt32), "network",
                      pl.col("waves").cast(pl.UInt32), pl.col("days").cast(pl.UInt32),
                      pl.lit(scales[0].minutes, pl.Int64).alias("bucket_minutes"), "log10_chance")
              .sort("size", "block", descending=[True, False]))  # block: its first node (_seeds)
    renumber = blocks.select("block").with_row_index("new").select("block", pl.col("new").cast(pl.Int64))
    out = final.join(renumber, on="block").join(accounts, on="acc").select(
        "account_id", pl.col("new").alias("block"), "surprise").sort("account_id")
    return Blocks(members=out, blocks=blocks.join(renumber, on="block").drop("block")
                  .rename({"new": "block"}).select(Blocks.empty().blocks.columns).sort("block"))


def _one_pass(scales: list[_Scale], calendar: pl.DataFrame, p: LockstepParams,
              taken: pl.DataFrame, first: pl.DataFrame) -> pl.DataFrame | None:
    """Seeds, then ``rounds`` of member tests: the tests of the final members, or None."""
    members = _seeds(scales[0], p, taken)
    if members.height == 0:
        return None
    nets = members.select("net").unique()
    scales = [s.on(nets) for s in scales]
    tests = members
    for _ in range(p.rounds):
        tests = pl.concat([_member_tests(s, members, calendar, first)
                           .with_columns(pl.lit(s.minutes).alias("scale")) for s in scales])
        # the best scale per account and block, paid for by the number of scales tried
        paid = float(np.log10(len(scales)))
        tests = (tests.sort("surprise", "support", "scale", descending=[True, True, False])
                 .unique(["block", "acc", "net"], keep="first")
                 .with_columns(pl.col("surprise") - paid, pl.col("support") - paid)
                 .join(taken, on=["acc", "net"], how="anti"))
        members = (tests.filter((pl.col("surprise") >= p.member_surprise)
                                & (pl.col("support") >= p.member_support))
                   .sort("surprise", "block", descending=[True, False])
                   .unique(["acc"], keep="first").select("acc", "net", "block"))
        if members.height == 0:
            return None
    return tests.join(members, on=["acc", "net", "block"])


def _waves(s: _Scale, members: pl.DataFrame, p: LockstepParams) -> pl.DataFrame:
    """Per block: buckets where at least ``min_occupancy`` members acted together, and their days."""
    per_day = MINUTES_PER_DAY // s.minutes
    an = _pack("acc", "net", "an")
    w = (s.occupied.lazy().with_columns(an).join(members.lazy().select(an, "block"), on="an")
         .group_by("block", "b").agg(pl.len().alias("n")).filter(pl.col("n") >= p.min_occupancy).collect())
    return w.group_by("block").agg(pl.len().alias("waves"), (pl.col("b") // per_day).n_unique().alias("days"))


def shifted(act: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The null world: every account's activity moved by its own random whole number of
    days (circularly within the horizon). Daily rhythm and volume stay, coordination goes;
    the detector should find nothing in it."""
    if act.height == 0:
        return act
    start = int(act["minute"].min()) // MINUTES_PER_DAY * MINUTES_PER_DAY  # type: ignore[arg-type]
    span = (int(act["minute"].max()) - start) // MINUTES_PER_DAY + 1  # type: ignore[arg-type]
    accounts = act.select(pl.col("account_id").unique().sort())
    rng = np.random.default_rng(seed)
    days = rng.integers(0, span, accounts.height)
    offsets = accounts.with_columns(pl.Series("off", days * MINUTES_PER_DAY))
    return act.join(offsets, on="account_id").select(
        "account_id",
        ((pl.col("minute").cast(pl.Int64) - start + pl.col("off")) % (span * MINUTES_PER_DAY) + start)
        .cast(pl.Int32).alias("minute"),
        "network").unique().sort("account_id", "minute", "network")
