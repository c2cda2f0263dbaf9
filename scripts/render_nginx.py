"""Render ``nginx/nginx.conf.template`` (``${UPPER_CASE}`` placeholders only; nginx's own
``$variables`` are left alone).

    python -m scripts.render_nginx --upstream 127.0.0.1:8000 [--upstream ...] --port 8080 \\
        --max-upload-mb 50 --prefix /tmp/nginx > nginx.conf
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "nginx" / "nginx.conf.template"
MULTIPART_ALLOWANCE_MB = 1
DEFAULTS = {
    "UPLOAD_RATE": "2r/s",
    "UPLOAD_BURST": "10",
    "API_RATE": "20r/s",
    "API_BURST": "40",
}


def render(values: Mapping[str, str], template: str | None = None) -> str:
    """Substitute every ``${NAME}``; a missing value is an error naming it."""
    text = template if template is not None else TEMPLATE.read_text()

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"nginx template needs {name}")
        return values[name]

    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", sub, text)


def values_for(
    upstreams: list[str], port: int, max_upload_mb: int, prefix: str, **overrides: str
) -> dict[str, str]:
    return {
        **DEFAULTS,
        "UPSTREAM_SERVERS": " ".join(f"server {u};" for u in upstreams),
        "NGINX_PORT": str(port),
        "MAX_UPLOAD_MB": str(max_upload_mb),
        "CLIENT_MAX_BODY_MB": str(max_upload_mb + MULTIPART_ALLOWANCE_MB),
        "NGINX_PREFIX": prefix,
        **overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Render the nginx configuration")
    parser.add_argument("--upstream", action="append", required=True, help="host:port")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-upload-mb", type=int, default=50)
    parser.add_argument("--prefix", default="/var/lib/nginx")
    for name in DEFAULTS:
        parser.add_argument(f"--{name.lower().replace('_', '-')}", default=DEFAULTS[name])
    args = parser.parse_args()
    overrides = {name: getattr(args, name.lower()) for name in DEFAULTS}
    text = render(
        values_for(args.upstream, args.port, args.max_upload_mb, args.prefix, **overrides)
    )
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
