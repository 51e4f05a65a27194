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
    # Yahoo's hosts are reached at this URL's address (https, port 443), as by an /etc/hosts
    # entry: a mirror that answers for Yahoo's names, or a local stand-in.
    yahoo_base_url: str = "https://query2.finance.yahoo.com"
    # CA certificates to trust for Yahoo instead of the public ones (a mirror's own CA).
    yahoo_ca_bundle: Path | None = None
    # The listing services (KRX, Wikipedia, Naver; tasks/universes/sources.py) are reached at
    # this URL's address, their names kept, as for Yahoo; unset: the real hosts.
    listings_base_url: str | None = None
    listings_ca_bundle: Path | None = None
    # The universe a price run follows when none is given (flows/universes/*.txt when none
    # is stored yet), and how long a leaver is still fetched (tasks/universes/README.md).
    us_universe: str = "sp500"
    kr_universe: str = "kospi200"
    leaver_grace_days: int = 7
    fred_base_url: str = "https://api.stlouisfed.org"
    fred_api_key: SecretStr | None = None
    backup_dir: Path = PROJECT_ROOT / "data" / "backups"
    s3_endpoint_url: str | None = None
    oci_endpoint: str | None = None
    alert_webhook_url: SecretStr | None = None
    # Where the Prefect UI lives, for links in alerts (PREFECT_UI_URL is preferred when set).
    ui_url: str = "http://127.0.0.1:4200"
    # The local stack's server (`make up`, `make status`, `make down`) listens on this port.
    prefect_port: int = 4200
    model_dir: Path = PROJECT_ROOT / "data" / "models"
    # What is kept between runs to save time (built exchange calendars); unset:
    # $XDG_CACHE_HOME/investflow, else ~/.cache/investflow.
    cache_dir: Path | None = None
    http_timeout_s: float = 30.0
    # Alerts (deployments/automations.py): a run Late this long alerts; a scheduled deployment
    # may go its longest gap between fire times plus this grace without a Completed run.
    alert_late_after_s: float = 600.0
    alert_overdue_grace_s: float = 3600.0
    # Backups: comma-separated PostgreSQL URLs (secret: they may carry passwords); unset means
    # the market store when it is PostgreSQL. Redis may carry a password too.
    backup_database_urls: SecretStr | None = None
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")

    # Offsite storage (S3, MinIO, OCI Object Storage's S3 endpoint) and its credentials.
    s3_bucket: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    # OCI API key for the A1 launch (or a profile of an OCI config file).
    oci_user: str | None = None
    oci_tenancy: str | None = None
    oci_fingerprint: str | None = None
    oci_region: str | None = None
    oci_private_key: SecretStr | None = None
    oci_private_key_file: Path | None = None
    oci_profile: str | None = None

    # Routes (work pools): where the real pools send work. See deployments/pools.py.
    aws_region: str = "ap-northeast-2"
    ecs_cluster: str = "investflow"
    # The ECS worker checks the subnets belong to this VPC; required with ecs_subnets.
    ecs_vpc_id: str | None = None
    ecs_subnets: list[str] = []
    ecs_security_groups: list[str] = []
    ecs_execution_role_arn: str | None = None
    ecs_log_group: str = "/investflow/flows"
    # One image per route (deployments/docker/): ingestion is the fargate pool's default, cpu
    # the CPU fallback's (predict-returns-cpu on that pool), gpu the desktop's.
    ingestion_image: str = "ghcr.io/investflow/investflow-ingestion:latest"
    cpu_image: str = "ghcr.io/investflow/investflow-cpu:latest"
    gpu_image: str = "ghcr.io/investflow/investflow-gpu:latest"


def get_settings() -> Settings:
    """Read the settings now (environment and .env), so each run sees current values."""
    return Settings()
