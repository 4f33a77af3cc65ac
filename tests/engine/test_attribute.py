"""The attribution rules on hand-made graphs: specificity, two hops, the calibration map."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from typing import Any

import polars as pl
import pytest

import attribution.engine.attribute as attribute_module
from attribution import __version__
from attribution.contracts.graph import TS, USES_SCHEMA, PropertyGraph
from attribution.contracts.settings import AttributionParams
from attribution.engine.attribute import attribute
from attribution.engine.calibration import IDENTITY, CalibrationMap, fit, load

FLEET = [f"f{i}" for i in range(6)]


@pytest.fixture(autouse=True)
def identity_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules are about raw evidence; the shipped map is tested on its own."""
    monkeypatch.setattr(attribute_module, "calibration_map", lambda: IDENTITY)


def _graph(uses: list[tuple[str, str, str]], links: list[tuple[str, str, str, str, float]],
           ) -> PropertyGraph:
    """uses: (account, kind, entity); links: (kind, key, org, source, confidence)."""
    accounts = sorted({u[0] for u in uses} | set(FLEET))
    use_rows = [{"account_id": a, "kind": k, "entity_id": e, "first_seen": None,
                 "last_seen": None, "count": 10} for a, k, e in uses]
    known = pl.DataFrame(
        [{"entity_type": k, "entity_id": key, "org_id": org, "source": src, "confidence": c,
          "observed_at": None, "kind": k, "key": key} for k, key, org, src, c in links],
        schema={"entity_type": pl.String, "entity_id": pl.String, "org_id": pl.String,
                "source": pl.String, "confidence": pl.Float64, "observed_at": TS,
                "kind": pl.String, "key": pl.String})
    empty = pl.DataFrame()
    return PropertyGraph(
        accounts=pl.DataFrame({"account_id": accounts}),
        uses=pl.DataFrame(use_rows, schema=dict(USES_SCHEMA)),  # type: ignore[arg-type]
        payments=empty, devices=empty,
        ips=pl.DataFrame(schema={"ip": pl.String, "asn": pl.Int64, "proxy_id": pl.String,
                                 "hosting": pl.Boolean}),
        proxies=empty,
        organizations=pl.DataFrame({"org_id": ["org_a", "org_b"], "name": ["Alpha", "Beta"]}),
        known_links=known,
    )


def _run(graph: PropertyGraph) -> tuple[dict[str, Any], pl.DataFrame]:
    members = pl.DataFrame({"account_id": FLEET, "fleet": [0] * len(FLEET)})
    scores = pl.DataFrame({"fleet": [0], "size": [len(FLEET)], "sybil_score": [0.95]},
                          schema={"fleet": pl.Int64, "size": pl.UInt32, "sybil_score": pl.Float64})
    out, evidence, _ = attribute(graph, members, scores, AttributionParams())
    return out.row(0, named=True), evidence


def _template_world(outsiders: int) -> PropertyGraph:
    uses = [(a, "prompt", "tpl") for a in FLEET]
    uses += [(f"u{i}", "prompt", "tpl") for i in range(outsiders)]
    return _graph(uses, [("prompt", "tpl", "org_a", "prior_case", 0.9)])


def test_a_template_only_the_fleet_uses_names_its_organization() -> None:
    row, evidence = _run(_template_world(outsiders=0))
    assert row["org_id"] == "org_a" and row["confidence"] > 0.9
    assert evidence.filter(pl.col("kind") == "prompt_template").height == 1


def test_a_template_thousands_of_ordinary_accounts_use_names_nobody() -> None:
    row, _ = _run(_template_world(outsiders=3000))
    assert row["org_id"] is None and row["confidence"] is None


def test_specificity_falls_with_the_ordinary_users_of_the_entity() -> None:
    strengths = []
    for outsiders in (0, 6, 60, 600):
        pieces, _ = attribute_module._evidence_pieces(
            _template_world(outsiders),
            pl.DataFrame({"account_id": FLEET, "fleet": [0] * len(FLEET)}),
            pl.DataFrame({"fleet": [0], "size": [len(FLEET)], "sybil_score": [0.95]}))
        strengths.append(pieces["strength"].item() if pieces.height else 0.0)  # dropped: nothing
    assert strengths == sorted(strengths, reverse=True) and strengths[-1] < 0.1 * strengths[0]


def _one_member_template(uses: int) -> PropertyGraph:
    """One member of six used the organization's own template (nobody else ever did)."""
    graph = _graph([("f0", "prompt", "tpl")], [("prompt", "tpl", "org_a", "prior_case", 0.85)])
    return PropertyGraph.from_frames({**graph.frames(), "uses": graph.uses.with_columns(
        pl.lit(uses, pl.Int64).alias("count"))})


def test_a_template_one_member_used_once_names_nobody_and_one_it_runs_does() -> None:
    # A leaked or copied template is used once or twice; an operation runs its own.
    once, _ = _run(_one_member_template(uses=1))
    assert once["org_id"] is None
    run, evidence = _run(_one_member_template(uses=40))
    assert run["org_id"] == "org_a"
    assert "(40 times)" in evidence.filter(pl.col("kind") == "prompt_template")["detail"].item()


def _network_world(staff_known: bool) -> PropertyGraph:
    """Alpha's office IP, used by the fleet and by 50 staff accounts."""
    uses = [(a, "ip", "10.0.0.1") for a in FLEET]
    links = [("ip", "10.0.0.1", "org_a", "whois", 1.0)]
    for i in range(50):
        uses += [(f"s{i}", "ip", "10.0.0.1"), (f"s{i}", "email_domain", "alpha.test")]
    if staff_known:  # the staff's email domain is a known fact about Alpha: its team
        links.append(("email_domain", "alpha.test", "org_a", "whois", 1.0))
    return _graph(uses, links)


def test_outsiders_of_the_organization_itself_do_not_dilute() -> None:
    assert _run(_network_world(staff_known=True))[0]["org_id"] == "org_a"
    # the same 50 accounts, not known to be Alpha's, are a crowd: the IP names nobody
    assert _run(_network_world(staff_known=False))[0]["org_id"] is None


def _two_hop_world(how: str) -> PropertyGraph:
    """A device of the fleet also used by ``emp``, an account of Alpha's team."""
    uses = [(a, "device", "box") for a in FLEET[:3]]
    if how != "direct":
        uses.append(("emp", "device", "box"))
    links: list[tuple[str, str, str, str, float]] = []
    if how == "team":  # only the employee's card is known, not the employee
        uses.append(("emp", "payment", "corp"))
        links.append(("payment", "corp", "org_a", "corporate_card_registry", 1.0))
    elif how == "employee":
        links.append(("account", "emp", "org_a", "employee_registry", 1.0))
    elif how == "direct":  # the device itself is known, only the fleet uses it
        links.append(("device", "box", "org_a", "prior_case", 1.0))
    return _graph(uses, links)


def test_two_hops_through_a_team_member_name_the_organization_with_a_sentence() -> None:
    row, evidence = _run(_two_hop_world("team"))
    assert row["org_id"] == "org_a"
    detail = evidence.filter(pl.col("org_id") == "org_a")["detail"].item()
    assert "3 accounts share device" in detail and "Alpha's team" in detail
    assert "two hops" in detail and "box" not in detail  # masked, like every identifier


def test_a_team_hop_is_weaker_than_an_employee_hop_and_than_direct_evidence() -> None:
    conf = {how: _run(_two_hop_world(how))[0]["confidence"] for how in ("team", "employee", "direct")}
    assert conf["team"] < conf["employee"] < conf["direct"]


def _team_device_world(facts: tuple[str, ...]) -> tuple[PropertyGraph, pl.DataFrame]:
    """A careful campaign's fleet of 130: two members share a device with ``emp``,
    an account of Alpha's staff not itself known, placed in Alpha's team by ``facts``
    (its corporate card, its email domain, or a second corporate card)."""
    fleet = [f"c{i}" for i in range(130)]
    uses = [(a, "device", "box") for a in fleet[:2]] + [("emp", "device", "box")]
    links: list[tuple[str, str, str, str, float]] = []
    for fact in facts:
        if fact == "card":
            uses.append(("emp", "payment", "corp"))
            links.append(("payment", "corp", "org_a", "corporate_card_registry", 0.95))
        elif fact == "second_card":
            uses.append(("emp", "payment", "corp2"))
            links.append(("payment", "corp2", "org_a", "corporate_card_registry", 0.95))
        elif fact == "domain":
            uses.append(("emp", "email_domain", "alpha.test"))
            links.append(("email_domain", "alpha.test", "org_a", "whois", 1.0))
    members = pl.DataFrame({"account_id": fleet, "fleet": [0] * len(fleet)})
    return _graph(uses, links), members


def _run_members(graph: PropertyGraph, members: pl.DataFrame) -> tuple[dict[str, Any], pl.DataFrame]:
    scores = pl.DataFrame({"fleet": [0], "size": [members.height], "sybil_score": [0.99]},
                          schema={"fleet": pl.Int64, "size": pl.UInt32, "sybil_score": pl.Float64})
    out, evidence, _ = attribute(graph, members, scores, AttributionParams())
    return out.row(0, named=True), evidence


def test_a_team_account_placed_by_its_card_and_its_domain_is_a_surer_hop() -> None:
    # Two independent sources (the card registry, the domain's whois) agree that the
    # account is Alpha's staff: the hop names the fleet, as one a known employee would.
    row, evidence = _run_members(*_team_device_world(("card", "domain")))
    assert row["org_id"] == "org_a"
    detail = evidence.filter(pl.col("org_id") == "org_a")["detail"].item()
    assert "card and email domain are Alpha's" in detail and "two hops" in detail
    # One of them alone places it less surely (a public domain holds students, a card
    # may be lent): two members of 130 on its device name nobody.
    for facts in (("card",), ("domain",), ("card", "second_card")):  # two cards: one source
        assert _run_members(*_team_device_world(facts))[0]["org_id"] is None, facts
    # ...and the two facts together still weigh below a known employee account.
    graph, members = _team_device_world(())
    employee = replace(graph, known_links=pl.concat([graph.known_links, _graph(
        [], [("account", "emp", "org_a", "employee_registry", 1.0)]).known_links]))
    conf = {k: _run_members(g, members)[0] for k, g in
            (("both", _team_device_world(("card", "domain"))[0]), ("employee", employee))}
    assert conf["both"]["confidence"] < conf["employee"]["confidence"]


def test_no_hop_without_the_team_evidence() -> None:
    row, evidence = _run(_two_hop_world("none"))
    assert row["org_id"] is None and evidence.height == 0


def test_a_hop_to_a_member_of_the_fleet_itself_is_not_a_second_path() -> None:
    # A member pays with the organization's card (direct evidence) and shares a
    # device with other members: no team hop through that member.
    uses = [(a, "device", "box") for a in FLEET] + [(FLEET[0], "payment", "corp")]
    _, evidence = _run(_graph(uses, [("payment", "corp", "org_a", "corporate_card_registry", 1.0)]))
    assert not evidence["detail"].str.contains("team").any()


def test_the_calibration_map_is_monotone_and_bounded() -> None:
    cmap = load()
    assert cmap.knots, "the package ships a fitted map"
    raw = [i / 100 for i in range(1, 100)]
    mapped = [cmap.apply(r) for r in raw]
    assert all(b >= a for a, b in pairwise(mapped))
    assert all(0.0 <= m < 1.0 for m in mapped)
    expr = pl.DataFrame({"r": raw}).select(cmap.expr(pl.col("r")).alias("c"))["c"].to_list()
    assert expr == pytest.approx(mapped)
    with pytest.raises(ValueError):
        CalibrationMap(knots=((0.5, 0.9), (0.8, 0.7)))  # falling: not a calibration map


def test_the_shipped_map_is_the_engines_and_says_how_to_regenerate_it() -> None:
    from importlib import resources
    data = json.loads(resources.files("attribution.engine").joinpath("calibration.json").read_text())
    assert data["engine_version"] == __version__ and data["method"] == "isotonic"
    assert "fixtures.fit_calibration" in data["regenerate"]
    assert not set(data["fitted_on"]["seeds"]) & set(range(201, 211))  # never held-out seeds
    assert load() == CalibrationMap(knots=tuple(tuple(k) for k in data["knots"]),
                                    engine_version=__version__)


def test_the_engine_applies_the_map_but_the_evidence_decides_to_abstain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = _run(_two_hop_world("team"))
    low = CalibrationMap(knots=((1.0, 0.3),))
    monkeypatch.setattr(attribute_module, "calibration_map", lambda: low)
    assert _run(_two_hop_world("team"))[0]["org_id"] is None  # mapped under the line
    high = CalibrationMap(knots=((0.01, 0.99),))
    monkeypatch.setattr(attribute_module, "calibration_map", lambda: high)
    row, _ = _run(_two_hop_world("team"))
    assert row["confidence"] == pytest.approx(high.apply(raw["confidence"]))
    # ...but a raw confidence under the abstention line names nobody, whatever the map says
    assert _run(_template_world(outsiders=3000))[0]["org_id"] is None


def test_fit_is_isotonic_and_never_certain() -> None:
    raw = [0.55, 0.65, 0.75, 0.85, 0.95] * 40
    knots = fit(raw, [r > 0.6 for r in raw])
    cmap = CalibrationMap(knots=knots)
    assert cmap.apply(0.55) < 0.1 and 0.9 < cmap.apply(0.95) < 1.0
    # a dip (fewer right at 0.85 than at 0.75) is pooled, never a fall
    noisy = fit(raw, [r != 0.85 or i % 2 == 0 for i, r in enumerate(raw)])
    assert all(b[1] >= a[1] for a, b in pairwise(noisy))
