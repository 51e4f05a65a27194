"""Settings: read at run time from INVESTFLOW_* and .env; missing secrets named, not blank."""

import re
from pathlib import Path

import pytest

from tasks.macro.fred import resolve_api_key
from tasks.settings import MissingSetting, Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_names_every_setting_and_nothing_else():
    listed = set(re.findall(r"(INVESTFLOW_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text()))
    assert listed == {f"INVESTFLOW_{name.upper()}" for name in Settings.model_fields}


def test_a_missing_secret_is_absent_not_blank_and_the_job_names_it(monkeypatch):
    monkeypatch.delenv("INVESTFLOW_FRED_API_KEY", raising=False)
    settings = Settings(_env_file=None)
    assert settings.fred_api_key is None
    # What the macro flow meets before any request (tests/flows/test_macro.py runs the flow).
    with pytest.raises(MissingSetting, match="fred-api-key.*INVESTFLOW_FRED_API_KEY"):
        resolve_api_key(settings)


def test_settings_are_read_when_asked_and_secrets_do_not_print(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("INVESTFLOW_FRED_API_KEY=from-dot-env-123\n")
    settings = get_settings()
    assert settings.fred_api_key.get_secret_value() == "from-dot-env-123"
    assert "from-dot-env-123" not in repr(settings)
    monkeypatch.setenv("INVESTFLOW_FRED_API_KEY", "from-environment-456")
    assert get_settings().fred_api_key.get_secret_value() == "from-environment-456"
