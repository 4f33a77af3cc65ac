"""PropertyGraph.canonical: one order whatever order a store gives back."""

from __future__ import annotations

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from attribution.contracts.graph import PropertyGraph, _in_order
from attribution.stages.build import build_graph
from tests.support.api_world import hand_tables


def _shuffled(graph: PropertyGraph, seed: int) -> PropertyGraph:
    rng = np.random.default_rng(seed)
    return PropertyGraph(**{
        name: frame.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))
        for name, frame in graph.frames().items()
    })


def test_canonical_is_one_order_and_keeps_frames_already_in_it() -> None:
    graph = build_graph(hand_tables()).canonical()
    for seed in range(3):
        again = _shuffled(graph, seed).canonical()
        for name, frame in graph.frames().items():
            assert_frame_equal(again.frames()[name], frame)
    # a frame in key order is the same object: nothing was sorted or copied
    assert graph.canonical().activity is graph.activity
    assert graph.canonical().uses is graph.uses


def test_in_order_reads_every_key_and_puts_nulls_last() -> None:
    assert _in_order(pl.DataFrame({"a": [1, 1, 2], "b": ["y", "z", "a"]}), ["a", "b"])
    assert not _in_order(pl.DataFrame({"a": [1, 1, 2], "b": ["z", "y", "a"]}), ["a", "b"])
    assert not _in_order(pl.DataFrame({"a": [2, 1], "b": ["a", "b"]}), ["a", "b"])
    assert _in_order(pl.DataFrame({"a": [1, None, None], "b": ["b", "a", "c"]}), ["a", "b"])
    assert not _in_order(pl.DataFrame({"a": [None, 1], "b": ["a", "b"]}), ["a", "b"])
    assert not _in_order(pl.DataFrame({"a": [1, 1], "b": [None, "a"]}), ["a", "b"])
    assert _in_order(pl.DataFrame({"a": [1], "b": ["a"]}), ["a", "b"])
    assert _in_order(pl.DataFrame({"a": [], "b": []}), ["a", "b"])
