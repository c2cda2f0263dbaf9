"""The README's configuration table names every variable the settings classes read, with the
default the code has; the docs link to files that exist and tell no story of their own making."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from contracts.outcomes import OUTCOMES
from contracts.settings import Settings
from ml_service.settings import EngineSettings
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS: tuple[tuple[type[BaseSettings], str], ...] = (
    (Settings, ""),
    (WorkerSettings, ""),
    (EngineSettings, "ML_"),
)
SHARED = {"ML_MAX_IMAGE_PIXELS"}  # read as MAX_IMAGE_PIXELS, shared with the gateway


def env_names() -> set[str]:
    names = {
        prefix + name.upper() for cls, prefix in SETTINGS for name in cls.model_fields
    }
    return names - SHARED


def readme_defaults() -> dict[str, str]:
    """``{VARIABLE: default cell}`` from the configuration table (``A`` / ``B`` rows split)."""
    table = README[README.index("## Configuration") :]
    out: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        out.update(zip(names, defaults, strict=True))
    return out


def documented(value: Any) -> str | None:
    """How a plain default reads in the table, or None for one the code computes."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Path):
        return str(value.relative_to(ROOT)) if value.is_absolute() else str(value)
    return str(value)


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = sorted(n for n in env_names() if f"`{n}`" not in README)
    assert not missing, f"README configuration table lacks: {missing}"


def test_every_default_in_the_readme_is_the_codes() -> None:
    table = readme_defaults()
    wrong = []
    for cls, prefix in SETTINGS:
        for name, field in cls.model_fields.items():
            env = prefix + name.upper()
            expected = documented(field.default) if field.default_factory is None else None
            if env in SHARED or expected is None:
                continue
            cell = table.get(env)
            if cell is None or cell.strip("`") != expected:
                wrong.append(f"{env}: README {cell!r}, code {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_every_outcome_code_is_documented() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    for o in OUTCOMES.values():
        row = f"| `{o.code}` | {o.status} | {'yes' if o.retryable else 'no'} |"
        assert row in api, f"docs/api.md lacks the row of {o.code}"


def test_the_table_names_no_variable_the_settings_do_not_read() -> None:
    known = env_names() | {"AWS_DEFAULT_REGION"}
    assert not sorted(set(readme_defaults()) - known)


DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_point_at_files(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{doc} links to missing {target}"


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 260


HISTORY = re.compile(r"\bsession[ -]?\d|\bseeds? 00\d|(?<![\w/])#\d{1,2}\b", re.IGNORECASE)


def test_no_words_about_the_projects_own_history() -> None:
    """Docs and code describe the software: no session numbers, seed names or issue numbers."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    hits = []
    for name in files:
        if not name.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt")):
            continue
        if not (ROOT / name).is_file() or name == "tests/test_docs.py":
            continue
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
