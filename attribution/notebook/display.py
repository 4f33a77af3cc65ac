"""What the notebooks show: shortcuts over the current run, and subgraph drawings."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from attribution.notebook.connection import NotebookError
from attribution.notebook.frames import mask_entity, query

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

# --------------------------------------------------------------------------- shortcuts


def md_escape(text: object) -> str:
    """Text for a generated Markdown cell: data must not turn into emphasis or links."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", str(text))




def duration_text(delta: dt.timedelta) -> str:
    """A time span as people say it (a sign-up burst is minutes, a campaign weeks)."""
    seconds = delta.total_seconds()
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def current_run() -> dict[str, Any]:
    """The current run's row of the ``runs`` query, or a one-line error if there is none."""
    runs = query("runs", limit=1000).filter(pl.col("current"))
    if runs.is_empty():
        raise NotebookError("no run in Neo4j yet: run `attribution run SNAPSHOT --out RUN` "
                            "with NEO4J_URI set")
    return runs.row(0, named=True)


def rank_fleets(fleets: pl.DataFrame) -> pl.DataFrame:
    """Fleets (``fleet_overview`` rows) by risk tier, then size: what triage looks at first.

    Tiers rather than the raw score: a 0.97 fleet of 300 accounts matters more
    than a 0.99 pair, yet any likely-inauthentic fleet comes before a team.
    """
    tier = (pl.when(pl.col("sybil_score") >= 0.8).then(pl.lit("high"))
            .when(pl.col("sybil_score") >= 0.5).then(pl.lit("medium")).otherwise(pl.lit("low")))
    order = pl.col("risk").replace_strict({"high": 0, "medium": 1, "low": 2}, return_dtype=pl.Int8)
    return (fleets.with_columns(tier.alias("risk"))
            .sort([order, pl.col("size"), pl.col("sybil_score"), pl.col("fleet_id")],
                  descending=[False, True, True, False])
            .with_row_index("rank", offset=1))


def top_fleet() -> str:
    """The fleet triage ranks first in the current run (the notebooks' default fleet)."""
    for min_sybil in (0.5, 0.0):
        fleets = query("fleet_overview", min_sybil=min_sybil, limit=10_000_000)
        if fleets.height:
            return str(rank_fleets(fleets)["fleet_id"][0])
    raise NotebookError("the current run has no fleets")


def capability_names() -> tuple[str, ...]:
    """Capability names in the order of the ``capabilities`` lists on Account nodes."""
    from attribution.contracts.schema import CAPABILITIES

    return CAPABILITIES


def capability_mix(lists: Iterable[list[int] | None]) -> pl.DataFrame:
    """Summed per-capability exchange counts of some accounts, with each one's share."""
    names = capability_names()
    totals = [0] * len(names)
    for counts in lists:
        for i, c in enumerate(counts or []):
            if i < len(totals) and c:
                totals[i] += int(c)
    frame = pl.DataFrame({"capability": list(names), "exchanges": totals})
    whole = sum(totals)
    return frame.with_columns((pl.col("exchanges") / whole if whole else pl.lit(0.0)).alias("share"))


# --------------------------------------------------------------------------- drawing

_STYLE: dict[str, tuple[str, str, float]] = {   # label -> (colour, marker, size)
    "focus": ("#ffbf00", "o", 260.0),
    "member": ("#d62728", "o", 70.0),
    "Account": ("#7f7f7f", "o", 70.0),
    "PaymentMethod": ("#1f77b4", "s", 150.0),
    "Device": ("#2ca02c", "D", 120.0),
    "IP": ("#ff7f0e", "^", 120.0),
    "ASN": ("#8c564b", "v", 150.0),
    "EmailDomain": ("#9467bd", "P", 130.0),
    "PromptTemplate": ("#e377c2", "X", 130.0),
    "Organization": ("#000000", "*", 450.0),
}
_LEGEND = {"focus": "this account", "member": "fleet account", "Account": "other account"}
_LABEL_RANK = {"Organization": 0, "ASN": 1, "PaymentMethod": 3, "Device": 3, "EmailDomain": 4,
               "PromptTemplate": 4}


def draw_graph(edges: Iterable[tuple[str, str, str, str]], *, members: Iterable[str] = (),
               focus: Iterable[str] = (), names: Mapping[str, str] | None = None,
               title: str = "", ax: Axes | None = None, seed: int = 7,
               label_accounts: int = 12, max_labels: int = 18) -> Figure:
    """Draw ``(source_label, source_id, target_label, target_id)`` edges with networkx.

    Accounts in ``members`` are red, other accounts grey, ``focus`` accounts gold
    and named. Entity labels are masked and capped at ``max_labels`` (organizations,
    ASNs and what touches them first, then cards and devices, then the busiest);
    IPs are named only when few or tied to an organization, so a fleet on forty
    proxy IPs stays readable. Account ids are written only
    when there are at most ``label_accounts`` accounts.
    """
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.lines import Line2D

    member_set, focus_set = set(members), set(focus)
    graph = nx.Graph()
    for sl, sid, tl, tid in edges:
        graph.add_edge((sl, str(sid)), (tl, str(tid)))
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 7))
    else:
        fig = ax.figure  # type: ignore[assignment]
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if graph.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
        return fig
    pos = nx.spring_layout(graph, seed=seed, k=1.5 / max(1.0, graph.number_of_nodes() ** 0.5))
    nx.draw_networkx_edges(graph, pos, ax=ax, width=0.8,
                           alpha=0.3 if graph.number_of_edges() < 300 else 0.12)

    def group(node: tuple[str, str]) -> str:
        label, key = node
        if label != "Account":
            return label
        return "focus" if key in focus_set else "member" if key in member_set else "Account"

    groups: dict[str, list[tuple[str, str]]] = {}
    for node in graph.nodes:
        groups.setdefault(group(node), []).append(node)
    handles = []
    for name, nodes in sorted(groups.items()):
        colour, marker, size = _STYLE.get(name, ("#17becf", "o", 90.0))
        nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, node_color=colour,
                               node_shape=marker, node_size=size, alpha=0.9,
                               edgecolors="black" if name == "focus" else None)
        text = _LEGEND.get(name, name)
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle="",
                              markersize=8, label=f"{text} ({len(nodes)})"))

    def priority(node: tuple[str, str]) -> tuple[int, int, str]:
        label, key = node
        near_org = any(n[0] in ("Organization", "ASN") for n in graph.neighbors(node))
        rank = _LABEL_RANK.get(label, 5)
        return (min(rank, 2) if near_org else rank, -int(graph.degree(node)), key)

    ips = sum(1 for n in graph.nodes if n[0] == "IP")
    entities = sorted((n for n in graph.nodes if n[0] != "Account"
                       and (n[0] != "IP" or ips <= 8 or priority(n)[0] <= 2)), key=priority)
    accounts = [n for n in graph.nodes if n[0] == "Account"]
    labels: dict[tuple[str, str], str] = {}
    for label, key in entities[:max_labels]:
        labels[(label, key)] = ((names or {}).get(key, key) if label == "Organization"
                                else mask_entity(label, key) or "")
    for node in accounts:
        if node[1] in focus_set or len(accounts) <= label_accounts:
            labels[node] = node[1]
    ys = [y for _, y in pos.values()]
    lift = 0.03 * ((max(ys) - min(ys)) or 1.0)
    nx.draw_networkx_labels(graph, {n: (x, y + lift) for n, (x, y) in pos.items()},
                            labels=labels, ax=ax, font_size=7)
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    return fig
