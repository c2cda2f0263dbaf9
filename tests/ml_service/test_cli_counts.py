"""The command-line tools refuse counts below one with argparse's exit 2, naming the option,
before doing any work (the bench's own cases: test_bench.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ml_service.tools import plan, profile
from scripts import efficiency

PLAN_ARGS = ["--mix", "hrnet=1", "--deadline", "1h"]


@pytest.mark.parametrize(
    ("main", "argv", "option"),
    [
        (profile.main, ["--max-batch", "0"], "--max-batch"),
        (profile.main, ["--fast-batch", "-2"], "--fast-batch"),
        (profile.main, ["--repeats", "0"], "--repeats"),
        (profile.main, ["--block", "x"], "--block"),
        (plan.main, ["--users", "0", "--images-per-user", "6", *PLAN_ARGS], "--users"),
        (plan.main, ["--users", "5", "--images-per-user", "0", *PLAN_ARGS], "--images-per-user"),
        (efficiency.main, ["--users", "0"], "--users"),
        (efficiency.main, ["--images-per-user", "-1"], "--images-per-user"),
    ],
)
def test_counts_below_one_are_refused(
    main: Callable[[list[str]], None],
    argv: list[str],
    option: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and option in capsys.readouterr().err
