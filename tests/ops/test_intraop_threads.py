"""``scripts.intraop_threads`` times every case in a fresh process (the OpenMP pool's state is
per process); the figures themselves go in docs/benchmarks.md."""

from __future__ import annotations

from scripts.intraop_threads import CASES, measure


def test_every_case_is_timed_for_each_model() -> None:
    (row,) = measure(["hrnet"], calls=2)
    assert row["model"] == "hrnet"
    for case in CASES:
        assert isinstance(row[case], float) and row[case] > 0
