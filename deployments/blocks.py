"""Save every block from settings (.env or INVESTFLOW_*): `python -m deployments.blocks`.

The bootstrap's `blocks` step. Saving overwrites, so running it again brings the blocks in
line with the settings. It prints block names and what was skipped, never a value. The block
classes themselves are configuration and live in blocks/; saving them to a server is
deployment, so it lives here.
"""

from __future__ import annotations

from collections.abc import Iterator

from blocks.names import (
    ALERTS,
    AWS_CREDENTIALS,
    BACKUP_BUCKET,
    FRED_API_KEY,
    MARKET_DATABASE,
    MODEL_BUCKET,
    OCI_CREDENTIALS,
)
from tasks.settings import Settings, get_settings


def _market_database(settings: Settings):
    from blocks.database import MarketDatabase

    if "database_url" not in settings.model_fields_set:
        return None, "INVESTFLOW_DATABASE_URL"
    return MarketDatabase(url=settings.database_url), None


def _fred_key(settings: Settings):
    from prefect.blocks.system import Secret

    if settings.fred_api_key is None:
        return None, "INVESTFLOW_FRED_API_KEY"
    return Secret(value=settings.fred_api_key), None


def _aws(settings: Settings):
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    if settings.aws_access_key_id is None or settings.aws_secret_access_key is None:
        return None, "INVESTFLOW_AWS_ACCESS_KEY_ID and INVESTFLOW_AWS_SECRET_ACCESS_KEY"
    return (
        AwsCredentials(
            aws_access_key_id=settings.aws_access_key_id.get_secret_value(),
            aws_secret_access_key=settings.aws_secret_access_key,
            region_name=settings.aws_region,
            aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
        ),
        None,
    )


def _bucket(folder: str):
    def build(settings: Settings):
        from prefect_aws import AwsCredentials, S3Bucket

        if not settings.s3_bucket:
            return None, "INVESTFLOW_S3_BUCKET"
        try:
            credentials = AwsCredentials.load(AWS_CREDENTIALS)
        except ValueError:
            return None, f"the {AWS_CREDENTIALS} block"
        return (
            S3Bucket(bucket_name=settings.s3_bucket, credentials=credentials, bucket_folder=folder),
            None,
        )

    return build


def _oci(settings: Settings):
    from blocks.oci import OciCredentials

    if settings.oci_private_key or settings.oci_private_key_file:
        key = settings.oci_private_key
        if key is None:
            key = settings.oci_private_key_file.expanduser().read_text()
        return (
            OciCredentials(
                user=settings.oci_user,
                tenancy=settings.oci_tenancy,
                fingerprint=settings.oci_fingerprint,
                region=settings.oci_region,
                private_key=key,
            ),
            None,
        )
    if settings.oci_profile:
        return OciCredentials(profile=settings.oci_profile, region=settings.oci_region), None
    return (
        None,
        "INVESTFLOW_OCI_PRIVATE_KEY (or _FILE) with INVESTFLOW_OCI_USER, _TENANCY, "
        "_FINGERPRINT and _REGION, or INVESTFLOW_OCI_PROFILE",
    )


def _alerts(settings: Settings):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from tasks.alerts.notify import block_for_url

    if settings.alert_webhook_url is None:
        return None, "INVESTFLOW_ALERT_WEBHOOK_URL"
    url = settings.alert_webhook_url.get_secret_value()
    block = block_for_url(url)
    if isinstance(block, str):  # any other JSON webhook
        # The URL itself is the credential (a token in its path): keep it among the secrets.
        block = CustomWebhookNotificationBlock(
            name="investflow",
            url="{{webhook_url}}",
            secrets={"webhook_url": url},
            json_data={"content": "{{subject}}\n{{body}}", "text": "{{subject}}\n{{body}}"},
        )
    return block, None


BUILDERS = {
    MARKET_DATABASE: _market_database,
    FRED_API_KEY: _fred_key,
    AWS_CREDENTIALS: _aws,
    BACKUP_BUCKET: _bucket("backups"),
    MODEL_BUCKET: _bucket("models"),
    OCI_CREDENTIALS: _oci,
    ALERTS: _alerts,
}


def saved_blocks() -> dict[str, str]:
    """Names of the blocks saved on the server, with their type's slug."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        documents = client.read_block_documents()
    return {d.name: d.block_type.slug for d in documents if d.name and d.block_type}


def register_blocks(settings: Settings | None = None, *, local: bool = False) -> Iterator[str]:
    """Save each block whose settings are present; say which were skipped and why.

    A block saved by an earlier run whose setting is now unset is never silently relied on:
    it is reported, and for the local stack (`make up`) the market-database block is set to
    the store the settings name, so an old URL cannot win over the default.
    """
    settings = settings or get_settings()
    saved = saved_blocks()
    for name, build in BUILDERS.items():
        block, missing = build(settings)
        if block is None and name == MARKET_DATABASE and local and name in saved:
            yield _follow_default_store(settings)
            continue
        if block is None:
            if name in saved:
                yield (
                    f"block {name}: kept from an earlier run, though {missing} is not set now; "
                    f"if it is stale: prefect block delete {saved[name]}/{name}"
                )
            else:
                yield f"block {name}: skipped (set {missing})"
            continue
        block.save(name, overwrite=True)
        yield f"block {name}: saved ({type(block).__name__})"


def _follow_default_store(settings: Settings) -> str:
    from blocks.database import MarketDatabase

    current = MarketDatabase.load(MARKET_DATABASE).url.get_secret_value()
    if current == settings.database_url.get_secret_value():
        return f"block {MARKET_DATABASE}: unchanged (the default store)"
    MarketDatabase(url=settings.database_url).save(MARKET_DATABASE, overwrite=True)
    return (
        f"block {MARKET_DATABASE}: updated to the default store; it held another URL "
        "from an earlier run (set INVESTFLOW_DATABASE_URL to use another)"
    )


if __name__ == "__main__":
    for line in register_blocks():
        print(line)
