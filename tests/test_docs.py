"""The README's configuration table names every variable the settings classes read."""

from __future__ import annotations

from pathlib import Path

from contracts.outcomes import OUTCOMES
from contracts.settings import Settings
from ml_service.settings import EngineSettings
from workers.settings import WorkerSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def env_names() -> set[str]:
    names = {name.upper() for name in Settings.model_fields}
    names |= {name.upper() for name in WorkerSettings.model_fields}
    names |= {f"ML_{name.upper()}" for name in EngineSettings.model_fields}
    names.discard("ML_MAX_IMAGE_PIXELS")  # read as MAX_IMAGE_PIXELS, shared with the gateway
    return names


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = sorted(n for n in env_names() if f"`{n}`" not in README)
    assert not missing, f"README configuration table lacks: {missing}"


def test_every_outcome_code_is_documented() -> None:
    api = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for o in OUTCOMES.values():
        row = f"| `{o.code}` | {o.status} | {'yes' if o.retryable else 'no'} |"
        assert row in api, f"docs/api.md lacks the row of {o.code}"
