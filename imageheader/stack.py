"""Which 2-D image of a file to read: a plane of a stack, a channel of a multichannel image.

A TIFF may hold more than one 2-D image in its first series: planes (an ImageJ or OME z-stack,
time points, or the pages of a plain multi-page file written as one series) and channels stored
as separate planes (an ImageJ/OME ``C`` axis, e.g. a channel-first ``(3, H, W)`` hyperstack).
The caller names one with ``plane`` and ``channel``; :func:`choose` refuses a file whose content
is ambiguous without a choice, or a choice it does not hold, with a message that says what the
file holds. Colour images (RGB samples in each pixel) need no choice; ``channel`` may still pick
one of their colours, which is then read as a grey image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imageheader.errors import StackChoice


class Layout(Protocol):
    """What a choice is checked against (:class:`~imageheader.header.Header` has it)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def planes(self) -> int: ...
    @property
    def channel_planes(self) -> int: ...

@dataclass(frozen=True)
class Choice:
    """What to read: ``plane`` of the stack (0 when it has one), ``channel`` of the channel
    planes (0 when it has one), and ``sample`` of the colour samples (``None``: all)."""

    plane: int = 0
    channel: int = 0
    sample: int | None = None


def describe(header: Layout, name: str) -> str:
    """``a.tif holds 5 planes × 3 channels of 512×512``-style words of what a file holds."""
    parts = []
    if header.planes > 1:
        parts.append(f"{header.planes} planes")
    if header.channel_planes > 1:
        parts.append(f"{header.channel_planes} channels")
    if not parts:
        parts.append("one plane" if header.channels == 1 else f"one {header.channels}-colour image")
    return f"{name} holds {' × '.join(parts)} of {header.width}×{header.height}"


def choose(
    header: Layout, plane: int | None, channel: int | None, name: str = "the file"
) -> Choice:
    """Check the request's ``plane``/``channel`` against what ``header`` describes.

    A job's choice applies to each of its files that has the dimension: a file that is not a
    stack ignores ``plane``, and a grey 2-D image ignores ``channel`` (so one job may hold
    stacks and plain images).

    Raises:
        StackChoice: a stack of planes without ``plane``, channel planes without ``channel``,
            or an index the file does not hold (the message says what it holds).
    """
    holds = describe(header, name)
    if header.planes > 1 and header.channel_planes > 1 and plane is None and channel is None:
        raise StackChoice(
            f"{holds}; choose one with plane=0..{header.planes - 1} and "
            f"channel=0..{header.channel_planes - 1}"
        )
    chosen_plane = 0
    if header.planes > 1:
        chosen_plane = _index(holds, "plane", plane, header.planes)
    if header.channel_planes > 1:
        return Choice(chosen_plane, _index(holds, "channel", channel, header.channel_planes), None)
    colours = min(header.channels, 3)  # RGBA: the alpha is no channel to segment
    if channel is None or colours == 1:
        return Choice(chosen_plane, 0, None)
    if not 0 <= channel < colours:
        raise StackChoice(f"{holds}; channel={channel} is not one of them (0..{colours - 1})")
    return Choice(chosen_plane, 0, channel)


def _index(holds: str, what: str, value: int | None, count: int) -> int:
    """``value`` when it is one of ``count``; else :class:`StackChoice` saying how to choose."""
    if value is None:
        raise StackChoice(f"{holds}; choose one with {what}=0..{count - 1}")
    if not 0 <= value < count:
        raise StackChoice(f"{holds}; {what}={value} is not one of them (0..{count - 1})")
    return value
