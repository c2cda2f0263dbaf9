"""What a bare GPU host lacks for ``scripts/gpu_check``, and how its wheels are fetched.

A GPU host of the kind the check targets has Python 3.12, PyTorch (2.11 or newer) with CUDA,
torchvision, timm, numpy, onnxruntime, scikit-image, opencv, tifffile, safetensors,
prometheus-client and rich, and no network. Everything else the GPU tests, the profiler and the
bench import is listed in ``CHECK``; what the gateway and a worker need for the short load test
is in ``SERVICE``; the dependencies of both are read from the metadata installed here.
``python -m scripts.gpu_host download`` (``make gpu-wheels``) fetches both as
manylinux / Python 3.12 wheels, pinned to the versions installed here (the versions the tests
ran with), into ``wheels/gpu/`` (git-ignored). ``scripts/gpu_check`` installs them from there
with ``pip --no-index``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "wheels" / "gpu"
LIMIT_MB = 64  # what the device tool carries along with the working tree

HOST = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "onnxruntime",
    "scikit-image",
    "opencv-python-headless",
    "tifffile",
    "safetensors",
    "prometheus-client",
    "rich",
)
"""What the GPU host has, with everything these depend on."""
CHECK = (
    "segmentation-models-pytorch",
    "pydantic-settings",
    "pytest",
    "nvidia-ml-py",
    "psutil",
    "tqdm",
    "pycocotools",
    "onnx",
)
"""What the GPU tests, the profiler and the bench import besides the host's."""
SERVICE = (
    "fastapi",
    "uvicorn",
    "python-multipart",
    "asyncpg",
    "orjson",
    "python-socketio",
    "redis",
    "celery",
    "boto3",
    "httpx",
    "aiohttp",
)
"""What the gateway, a worker and the load tester import besides the above."""
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...]) -> set[str]:
    """``roots`` and every distribution they require (no extras) on Linux with Python 3.12,
    read from the metadata installed here."""
    from packaging.requirements import Requirement

    env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "extra": ""}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = _key(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return seen


SHIPPED_ANYWAY = (
    "typing-extensions",  # pydantic needs a newer one than torch does
    "packaging",
    "click",
    "h11",
    "anyio",
    "sniffio",
    "idna",
    "certifi",
    "httpx",
    "httpcore",
)
"""Small pure-Python libraries the host's packages may bring in another version, or not at all
(they come with timm's hub client here): shipped whenever the closure needs them."""


def needed(service: bool = True) -> tuple[str, ...]:
    """What to ship: the closure of ``CHECK`` (and ``SERVICE``) minus the host's closure,
    keeping ``SHIPPED_ANYWAY``."""
    wanted = closure(CHECK + (SERVICE if service else ()))
    host = closure(HOST) - {_key(n) for n in CHECK + SHIPPED_ANYWAY}
    return tuple(sorted(wanted - host))


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` as installed here; a name not installed here is taken unpinned."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def download(dest: Path, names: tuple[str, ...]) -> int:
    """Fetch ``names`` (no dependencies: the list is complete) as Python 3.12 manylinux
    wheels into ``dest``; returns pip's exit code."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    cmd += ["--abi", "abi3", "--abi", "none"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["-d", str(dest), *pinned(names)]
    return subprocess.call(cmd)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.whl")) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("download", help="fetch the wheels into --dest")
    get.add_argument("--dest", type=Path, default=WHEELS)
    get.add_argument("--no-service", action="store_true", help="only what the GPU checks need")
    sub.add_parser("list", help="print the pinned requirements, one a line")
    args = parser.parse_args(argv)
    names = needed(service=not getattr(args, "no_service", False))
    if args.command == "list":
        print("\n".join(pinned(names)))
        return 0
    code = download(args.dest, names)
    if code:
        return code
    mb = size_mb(args.dest)
    print(f"{args.dest}: {len(list(args.dest.glob('*.whl')))} wheels, {mb:.1f} MiB")
    if mb > LIMIT_MB:
        print(f"more than {LIMIT_MB} MiB: the device tool carries at most that", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
