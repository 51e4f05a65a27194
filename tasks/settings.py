"""investflow's settings: one pydantic-settings class, read from INVESTFLOW_* and .env."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class MissingSetting(RuntimeError):
    """A setting the job needs was not given."""


class Settings(BaseSettings):
    """Every endpoint and credential the flows use; build it inside a run, never at import."""

    model_config = SettingsConfigDict(
        env_prefix="INVESTFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # A secret too: a PostgreSQL URL usually carries its password.
    database_url: SecretStr = SecretStr(f"sqlite:///{PROJECT_ROOT / 'data' / 'market.db'}")
    yahoo_base_url: str = "https://query2.finance.yahoo.com"
    fred_base_url: str = "https://api.stlouisfed.org"
    fred_api_key: SecretStr | None = None
    backup_dir: Path = PROJECT_ROOT / "data" / "backups"
    s3_endpoint_url: str | None = None
    oci_endpoint: str | None = None
    alert_webhook_url: SecretStr | None = None
    # Where the Prefect UI lives, for links in alerts (PREFECT_UI_URL is preferred when set).
    ui_url: str = "http://127.0.0.1:4200"
    model_dir: Path = PROJECT_ROOT / "data" / "models"
    http_timeout_s: float = 30.0

    def require(self, name: str) -> str:
        """Return a secret's plain value, or fail naming the setting that is missing."""
        value = getattr(self, name)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
            raise MissingSetting(
                f"INVESTFLOW_{name.upper()} is not set (environment or .env); "
                f"it is required for this job"
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def get_settings() -> Settings:
    """Read the settings now (environment and .env), so each run sees current values."""
    return Settings()
