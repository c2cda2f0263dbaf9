"""The web page for people: ``GET /`` (the page) and ``GET /static/{path}`` (its files).

Everything the page needs is served from ``backend/static/`` (no CDN): plain HTML, CSS and JS,
and the vendored Socket.IO client under ``vendor/``. The page talks to the REST API with the
user's key and to ``/socket.io`` for live progress. Files are revalidated on every load
(``no-cache`` with the ETag that ``FileResponse`` sends), so an upgraded gateway serves the new
page at once. The Content-Security-Policy allows only this origin (the API key lives in the
page, so no foreign script, style or connection may run there).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.errors import NotFound

router = APIRouter(tags=["web"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
"""``backend/static``: ``index.html``, ``app.js``, ``style.css`` and ``vendor/``."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def static_file(relative: str) -> Path:
    """The file ``relative`` under :data:`STATIC_DIR`.

    Raises:
        NotFound: no such file, or a path that leaves the directory (``..``, absolute).
    """
    root = STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound("not_found", f"no such file: /static/{relative}")
    return path


def _serve(path: Path) -> FileResponse:
    media_type = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/", response_class=FileResponse)
async def index() -> FileResponse:
    """The page: upload images, follow their progress, look at the results."""
    return _serve(static_file("index.html"))


@router.get("/static/{relative:path}", response_class=FileResponse)
async def static(relative: str) -> FileResponse:
    """The page's scripts, styles and vendored libraries."""
    return _serve(static_file(relative))
