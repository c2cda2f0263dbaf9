"""Stacks: what a TIFF holds (planes, channel planes) and choosing one 2-D image of it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from imageheader import StackChoice, choose, read_header
from imageheader.tiff import open_tiff, page_index


def tiff(data: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, **kw)
    return buf.getvalue()


Z_STACK = tiff(np.zeros((5, 64, 48), np.uint16), imagej=True, metadata={"axes": "ZYX"})
CHANNEL_FIRST = tiff(np.zeros((3, 64, 48), np.uint16), imagej=True, metadata={"axes": "CYX"})
HYPERSTACK = tiff(np.zeros((2, 3, 64, 48), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
PLAIN_PAGES = tiff(np.zeros((4, 64, 48), np.uint8), photometric="minisblack")
RGB = tiff(np.zeros((64, 48, 3), np.uint8))


@pytest.mark.parametrize(
    ("data", "planes", "channels"),
    [(Z_STACK, 5, 1), (CHANNEL_FIRST, 1, 3), (HYPERSTACK, 2, 3), (PLAIN_PAGES, 4, 1), (RGB, 1, 1)],
    ids=["z-stack", "channel-first", "hyperstack", "plain-pages", "rgb"],
)
def test_the_header_says_how_many_planes_and_channel_planes(
    data: bytes, planes: int, channels: int
) -> None:
    h = read_header(data)
    assert (h.planes, h.channel_planes, h.width, h.height) == (planes, channels, 48, 64)


def test_a_z_stack_without_a_plane_says_what_it_holds_and_how_to_choose() -> None:
    with pytest.raises(StackChoice) as exc:
        choose(read_header(Z_STACK), None, None, "a.tif")
    assert exc.value.message == "a.tif holds 5 planes of 48×64; choose one with plane=0..4"
    with pytest.raises(StackChoice, match="plane=5 is not one of them"):
        choose(read_header(Z_STACK), 5, None, "a.tif")
    assert choose(read_header(Z_STACK), 4, None).plane == 4


def test_channel_planes_need_a_channel() -> None:
    with pytest.raises(StackChoice, match="3 channels of 48×64; choose one with channel=0..2"):
        choose(read_header(CHANNEL_FIRST), None, None)
    with pytest.raises(StackChoice, match="choose one with plane=0..1"):
        choose(read_header(HYPERSTACK), None, 1)
    with pytest.raises(StackChoice, match=r"choose one with plane=0..1 and channel=0..\d$"):
        choose(read_header(HYPERSTACK), None, None)  # both at once, not one after the other
    assert choose(read_header(HYPERSTACK), 1, 2).channel == 2


def test_a_colour_image_needs_no_choice_and_may_give_one_colour() -> None:
    h = read_header(RGB)
    assert choose(h, None, None).sample is None
    assert choose(h, 0, 1).sample == 1
    with pytest.raises(StackChoice, match="channel=3 is not one of them"):
        choose(h, None, 3)
    assert choose(h, 1, None) == choose(h, None, None)  # not a stack: plane does not apply
    grey = read_header(PLAIN_PAGES)
    assert choose(grey, 2, 7).channel == 0  # grey: channel does not apply


def test_page_index_follows_the_axes_order() -> None:
    with open_tiff(HYPERSTACK) as tif:  # ZCYX: page = z * 3 + c
        assert [page_index(tif, z, c) for z in range(2) for c in range(3)] == list(range(6))
