"""``cellseg segment``'s segmentation options as parsed (no server needed)."""

from __future__ import annotations

import pytest

from cellseg_client.cli.main import build_parser


def _parse(*extra: str) -> object:
    return build_parser().parse_args(["segment", "in", "--model", "unet", "--out", "o", *extra])


def test_split_is_on_unless_no_split_and_diameter_takes_auto_or_a_number() -> None:
    args = _parse()
    assert (args.no_split, args.diameter) == (False, None)  # type: ignore[attr-defined]
    args = _parse("--no-split", "--diameter", "auto")
    assert (args.no_split, args.diameter) == (True, "auto")  # type: ignore[attr-defined]
    assert _parse("--diameter", "42.5").diameter == 42.5  # type: ignore[attr-defined]


def test_a_diameter_that_is_not_a_number_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--diameter", "big")
    assert "diameter" in capsys.readouterr().err
