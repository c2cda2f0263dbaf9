"""Streaming ``multipart/form-data`` reader for uploads: no part is ever held whole in memory.

python-multipart's ``MultipartParser`` is fed the request body chunk by chunk as it arrives;
its callbacks only record events, which are then handled in order (so the async work of ending
a file, fsync and header check, runs between chunks). File parts stream into an
:class:`~backend.uploads.UploadBatch`; small text fields are collected and parsed as soon as
they end, so a bad parameter fails the request before the rest of the body is read.

Limits enforced while streaming: the ``Content-Length`` (when sent) and the bytes actually
received against ``max_body_bytes`` (413 ``upload_too_large``), the number of file parts
(413 ``too_many_files``), the number of parts and the size of text fields (400
``invalid_multipart``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from backend.errors import BadRequest, PayloadTooLarge
from backend.uploads import UploadBatch, about_file, safe_filename, upload_too_large

MAX_TEXT_FIELD_BYTES = 1024
MAX_PARTS_OVERHEAD = 64
"""Parts allowed beyond the file limit (text fields, ignored extras)."""


def invalid_multipart(message: str) -> BadRequest:
    return BadRequest("invalid_multipart", f"malformed multipart/form-data body: {message}")


@dataclass
class FormResult:
    """What the body held besides the files (which are in the batch)."""

    values: dict[str, Any] = field(default_factory=dict)
    ignored_fields: list[str] = field(default_factory=list)


@dataclass
class _Part:
    headers: dict[str, bytes]
    name: str = ""
    kind: str = "ignored"  # "file", "text" or "ignored"
    text: bytearray = field(default_factory=bytearray)


def _boundary(request: Request) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise invalid_multipart("the Content-Type must be multipart/form-data")
    boundary = options.get(b"boundary", b"")
    if not boundary:
        raise invalid_multipart("the Content-Type has no boundary")
    return boundary


class _Events:
    """Callbacks of the parser: they only append events, handled after each chunk."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, Any]] = []
        self.finished = False
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.queue.append(("begin", self._headers)),
            "on_part_data": lambda d, s, e: self.queue.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.queue.append(("end", None)),
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.finished = True


async def read_multipart(
    request: Request,
    batch: UploadBatch,
    *,
    file_field: str,
    max_files: int,
    text_fields: Mapping[str, Callable[[str], Any]],
    max_body_bytes: int,
    files_limit: str = "per job (MAX_FILES_PER_JOB)",
) -> FormResult:
    """Stream the request's multipart body: ``file_field`` parts into ``batch``, the named
    text fields through their parsers (an empty value counts as not sent), other parts
    drained and ignored.

    Args:
        request: the incoming request (its body must not have been read).
        batch: receives every ``file_field`` part, in order.
        file_field: name of the file parts (a part of that name is a file, filename or not).
        max_files: more file parts than this answer 413 ``too_many_files``.
        files_limit: what that message says the limit is, after ``at most N``.
        text_fields: ``{name: parser}``; a parser raises an ``ApiError`` for a bad value.
        max_body_bytes: cap on the whole body, multipart framing included.

    Raises:
        ApiError: ``invalid_multipart`` (400), ``upload_too_large``/``too_many_files`` (413),
            a text field parser's error, or a file's header check error.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise upload_too_large(batch.max_total_bytes)
    events = _Events()
    try:
        parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise invalid_multipart(str(exc)) from exc
    result = FormResult()
    state = _State(batch, file_field, max_files, text_fields, result, files_limit)
    received = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        received += len(chunk)
        if received > max_body_bytes:
            raise upload_too_large(batch.max_total_bytes)
        if events.finished:
            continue  # epilogue after the closing boundary: ignored
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise invalid_multipart(str(exc)) from exc
        await state.handle(events.queue)
        events.queue.clear()
    if not events.finished:
        raise invalid_multipart("the body ends before the closing boundary")
    return result


class _State:
    def __init__(
        self,
        batch: UploadBatch,
        file_field: str,
        max_files: int,
        text_fields: Mapping[str, Callable[[str], Any]],
        result: FormResult,
        files_limit: str,
    ) -> None:
        self.batch = batch
        self.file_field = file_field
        self.max_files = max_files
        self.files_limit = files_limit
        self.text_fields = text_fields
        self.result = result
        self.part: _Part | None = None
        self.parts = 0
        self.files = 0

    async def handle(self, queue: list[tuple[str, Any]]) -> None:
        for kind, payload in queue:
            if kind == "begin":
                self._begin(payload)
            elif kind == "data":
                self._data(payload)
            else:
                await self._end()

    def _begin(self, headers: dict[str, bytes]) -> None:
        self.parts += 1
        if self.parts > self.max_files + MAX_PARTS_OVERHEAD:
            raise invalid_multipart(
                f"too many parts: at most {self.max_files + MAX_PARTS_OVERHEAD} per request"
            )
        disposition, options = parse_options_header(headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise invalid_multipart("a part has no 'Content-Disposition: form-data; name=...'")
        name = _decode(options[b"name"])
        part = _Part(headers, name)
        if name == self.file_field:
            self.files += 1
            filename = options.get(b"filename")
            if self.files > self.max_files:
                name = _decode(filename) if filename is not None else f"image-{self.files}"
                raise about_file(
                    PayloadTooLarge(
                        "too_many_files",
                        f"too many files: at most {self.max_files} {self.files_limit}",
                    ),
                    safe_filename(name, f"image-{self.files}"),
                    self.files - 1,
                )
            self.batch.begin(_decode(filename) if filename is not None else None)
            part.kind = "file"
        elif name in self.text_fields:
            if name in self.result.values:
                raise invalid_multipart(f"field {name!r} is sent twice")
            part.kind = "text"
        else:
            self.result.ignored_fields.append(name)
        self.part = part

    def _data(self, data: bytes) -> None:
        part = self.part
        if part is None:  # pragma: no cover - the parser always begins a part first
            raise invalid_multipart("data outside a part")
        if part.kind == "file":
            self.batch.write(data)
        elif part.kind == "text":
            part.text.extend(data)
            if len(part.text) > MAX_TEXT_FIELD_BYTES:
                raise invalid_multipart(
                    f"field {part.name!r} is longer than {MAX_TEXT_FIELD_BYTES} bytes"
                )

    async def _end(self) -> None:
        part, self.part = self.part, None
        if part is None:  # pragma: no cover
            return
        if part.kind == "file":
            await self.batch.end()
        elif part.kind == "text":
            try:
                value = part.text.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise invalid_multipart(f"field {part.name!r} is not UTF-8 text") from exc
            if value:
                self.result.values[part.name] = self.text_fields[part.name](value)


def _decode(raw: bytes) -> str:
    """Header parameter bytes (latin-1 from the parser) as the UTF-8 text browsers send."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
