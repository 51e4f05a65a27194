"""The bootstrap's blocks step: saved from settings by name, loaded by flows, never printed."""

from __future__ import annotations

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.blocks.system import Secret
from prefect_aws import AwsCredentials, S3Bucket

from blocks.database import MarketDatabase, database_url
from blocks.oci import OciCredentials
from deployments.blocks import BUILDERS, register_blocks
from tasks.settings import Settings

pytestmark = pytest.mark.integration

SECRETS = {
    "database_url": "postgresql://app:db-pw-9f8e7d@db.example:5432/market",
    "fred_api_key": "fredkey0123456789abcdef",
    "alert_webhook_url": "http://127.0.0.1:9/hooks/alert-token-5c4b3a",
    "aws_access_key_id": "AKIAEXAMPLE123456",
    "aws_secret_access_key": "aws-secret-7g6h5j4k",
    "oci_private_key": "-----BEGIN PRIVATE KEY-----\nMIIEexample\n-----END PRIVATE KEY-----",
}


@pytest.fixture
def saved_blocks():
    yield
    for name in BUILDERS:
        for block_type in (
            MarketDatabase,
            Secret,
            AwsCredentials,
            S3Bucket,
            OciCredentials,
            CustomWebhookNotificationBlock,
        ):
            try:
                block_type.delete(name)
            except Exception:  # noqa: BLE001 - not saved as this type
                pass


def full_settings() -> Settings:
    return Settings(
        s3_bucket="investflow-bucket",
        oci_user="ocid1.user.oc1..u",
        oci_tenancy="ocid1.tenancy.oc1..t",
        oci_fingerprint="aa:bb",
        oci_region="ap-chuncheon-1",
        **SECRETS,
    )


def test_every_block_is_saved_and_loads_back_with_its_secret(saved_blocks):
    lines = list(register_blocks(full_settings()))
    printed = "\n".join(lines)
    assert all(line.endswith(")") and "saved" in line for line in lines), printed
    for value in SECRETS.values():
        assert value not in printed
    assert Secret.load("fred-api-key").get() == SECRETS["fred_api_key"]
    assert database_url(Settings(_env_file=None)) != SECRETS["database_url"]  # env var wins
    assert MarketDatabase.load("market-database").url.get_secret_value() == SECRETS["database_url"]
    bucket = S3Bucket.load("investflow-backups")
    assert (bucket.bucket_name, bucket.bucket_folder) == ("investflow-bucket", "backups")
    assert S3Bucket.load("investflow-models").bucket_folder == "models"
    key = OciCredentials.load("oci-credentials").private_key.get_secret_value()
    assert key == SECRETS["oci_private_key"]
    alerts = CustomWebhookNotificationBlock.load("investflow-alerts")
    assert alerts.url == "{{webhook_url}}"  # the URL is a secret of the block, not its text
    assert alerts.secrets.get_secret_value() == {"webhook_url": SECRETS["alert_webhook_url"]}
    # Registering again overwrites in place: same names, same values.
    assert list(register_blocks(full_settings())) == lines


def test_nothing_configured_means_every_block_skipped_with_its_setting(monkeypatch):
    monkeypatch.delenv("INVESTFLOW_DATABASE_URL")
    lines = list(register_blocks(Settings(_env_file=None)))
    assert len(lines) == len(BUILDERS)
    assert all("skipped (set " in line for line in lines)
    assert any("INVESTFLOW_FRED_API_KEY" in line for line in lines)


def test_a_block_left_by_an_earlier_run_never_silently_wins(saved_blocks, monkeypatch):
    stale = "postgresql://app:old-pw-1a2b@gone.example:5432/market"
    list(register_blocks(Settings(_env_file=None, database_url=stale)))
    monkeypatch.delenv("INVESTFLOW_DATABASE_URL")
    now = Settings(_env_file=None)  # the operator has since unset the URL
    default = now.database_url.get_secret_value()

    # Against a real server: the block stays, and every run of bootstrap says so, with the fix.
    (line,) = [x for x in register_blocks(now) if x.startswith("block market-database")]
    assert "kept from an earlier run" in line and "INVESTFLOW_DATABASE_URL" in line
    assert "prefect block delete market-database/market-database" in line
    assert "old-pw-1a2b" not in line

    # The local stack follows the settings: the default store, not the URL of a past run.
    (line,) = [x for x in register_blocks(now, local=True) if x.startswith("block market-data")]
    assert "updated to the default store" in line
    assert database_url(now) == default
    (line,) = [x for x in register_blocks(now, local=True) if x.startswith("block market-data")]
    assert line.endswith("unchanged (the default store)")


def test_registered_alert_block_delivers_through_send_alert(saved_blocks):
    from tasks.alerts.notify import send_alert
    from tests.fakes.webhook import FakeWebhook

    with FakeWebhook() as webhook:
        settings = Settings(alert_webhook_url=webhook.url + "/hooks/tok-3e2d1c")
        list(register_blocks(settings))
        send_alert("Backup failed", "backup-postgres failed")
    assert webhook.texts() == ["Backup failed\nbackup-postgres failed"]
    assert webhook.requests[0].path == "/hooks/tok-3e2d1c"
