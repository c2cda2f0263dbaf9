"""``scripts.intraop_threads`` times every case in a fresh process (the OpenMP pool's state is
per process); the figures themselves go in docs/benchmarks.md."""

from __future__ import annotations

import pytest

from scripts.intraop_threads import CASES, main, measure


@pytest.mark.slow  # times every model in threads
def test_every_case_is_timed_for_each_model() -> None:
    (row,) = measure(["hrnet"], calls=2)
    assert row["model"] == "hrnet"
    for case in CASES:
        assert isinstance(row[case], float) and row[case] > 0


@pytest.mark.parametrize("calls", ["0", "-2", "many"])
def test_calls_must_be_a_count(calls: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--calls", calls])
    assert exc.value.code == 2 and "--calls" in capsys.readouterr().err
