"""Offsite copies on S3-compatible storage (AWS, OCI Object Storage, MinIO) via prefect-aws."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from blocks.names import AWS_CREDENTIALS, BACKUP_BUCKET
from tasks.backups.files import (
    MANIFEST_SUFFIX,
    BackupError,
    manifest_path,
    parse_taken_at,
    sha256_file,
)
from tasks.backups.retention import StoredBackup, plan_retention
from tasks.logs import run_logger

# One PUT carries a whole-object SHA-256 the store checks on arrival (S3 allows up to 5 GiB);
# larger files go multipart, where S3 only keeps per-part SHA-256s.
SINGLE_PUT_MAX = 5 * 1024**3


@dataclass(frozen=True)
class RemoteSet:
    """A backup object in the bucket, as retention sees it."""

    key: str
    taken_at: dt.datetime
    complete: bool

    @property
    def manifest_key(self) -> str:
        return key_of_manifest(self.key)


def key_of_manifest(key: str) -> str:
    return manifest_path(Path(key)).as_posix()


def load_bucket(required: bool | None, endpoint_url: str | None):
    """The S3Bucket block, or None when offsite copy is off (block absent and not required)."""
    from prefect_aws import AwsCredentials, S3Bucket

    try:
        bucket = S3Bucket.load(BACKUP_BUCKET)
    except ValueError:
        if required:
            raise BackupError(
                f"offsite copy was asked for but the S3Bucket block {BACKUP_BUCKET!r} does not "
                "exist; create it (and AwsCredentials 'investflow-aws') first"
            ) from None
        return None
    if required is False:
        return None
    try:
        bucket.credentials = AwsCredentials.load(AWS_CREDENTIALS)
    except ValueError:
        pass  # the bucket block's own nested credentials are used
    if endpoint_url:
        # INVESTFLOW_S3_ENDPOINT_URL points the same blocks at OCI, MinIO or a test stand-in.
        bucket.credentials.aws_client_parameters.endpoint_url = endpoint_url
    return bucket


def full_key(bucket, key: str) -> str:
    folder = bucket.bucket_folder.strip("/")
    return f"{folder}/{key}" if folder else key


def relative_key(bucket, key: str) -> str:
    folder = bucket.bucket_folder.strip("/")
    return key[len(folder) + 1 :] if folder and key.startswith(folder + "/") else key


def upload_checked(bucket, path: Path, key: str, sha256_hex: str) -> str:
    """Upload path with its SHA-256 attached; confirm the store kept that checksum; s3:// URI."""
    from boto3.s3.transfer import TransferConfig

    b64 = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256_hex}}
    if path.stat().st_size < SINGLE_PUT_MAX:
        extra["ChecksumSHA256"] = b64
    bucket.upload_from_path(
        path, key, ExtraArgs=extra, Config=TransferConfig(multipart_threshold=SINGLE_PUT_MAX)
    )
    client = bucket.credentials.get_s3_client()
    head = client.head_object(
        Bucket=bucket.bucket_name, Key=full_key(bucket, key), ChecksumMode="ENABLED"
    )
    kept = head.get("Metadata", {}).get("sha256")
    stored = head.get("ChecksumSHA256")
    if kept != sha256_hex or ("ChecksumSHA256" in extra and stored not in (None, b64)):
        raise BackupError(
            f"offsite copy of {path.name} has checksum {stored or kept}, expected {b64}"
        )
    return f"s3://{bucket.bucket_name}/{full_key(bucket, key)}"


@task(
    name="upload-backup",
    tags=["backup"],
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=[2, 5, 15],
)
def upload_backup(bucket, root: Path, stored: StoredBackup) -> dict[str, str]:
    """Upload a backup to every tier it landed in, data first and manifests last."""
    tdir = stored.backup.data.parent.parent
    placed = [tdir / tier / stored.backup.data.name for tier in stored.tiers]
    uris = {}
    for path in placed:
        uris[path.parent.name] = upload_checked(
            bucket, path, path.relative_to(root).as_posix(), stored.sha256
        )
    for path in placed:  # a manifest in the bucket means its set is complete
        manifest = manifest_path(path)
        digest, _ = sha256_file(manifest)
        upload_checked(bucket, manifest, manifest.relative_to(root).as_posix(), digest)
    run_logger().info("Offsite copy of %s in %s", stored.backup.data.name, sorted(uris))
    return uris


def list_remote(bucket, prefix: str) -> dict[str, list[RemoteSet]]:
    """Remote backups under prefix (relative to the bucket folder) by tier, newest first."""
    keys = {relative_key(bucket, o["Key"]) for o in bucket.list_objects(prefix)}
    by_tier: dict[str, list[RemoteSet]] = {}
    for key in keys:
        path = Path(key)
        if key.endswith(MANIFEST_SUFFIX) or path.name.startswith("."):
            continue
        taken_at = parse_taken_at(path)
        if taken_at is not None:
            remote = RemoteSet(key, taken_at, key_of_manifest(key) in keys)
            by_tier.setdefault(path.parent.name, []).append(remote)
    for sets in by_tier.values():
        sets.sort(key=lambda s: s.taken_at, reverse=True)
    return by_tier


@task(
    name="prune-remote",
    tags=["backup"],
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=[2, 5, 15],
)
def prune_remote(bucket, root: Path, tdir: Path, keep: dict[str, int]) -> list[str]:
    """Apply the local retention counts to the bucket copies of one target; deleted keys."""
    client = bucket.credentials.get_s3_client()
    pruned = []
    for tier, sets in list_remote(bucket, tdir.relative_to(root).as_posix() + "/").items():
        _, old = plan_retention(sets, max(keep.get(tier, 0), 0))
        for remote in old:
            for key in (remote.manifest_key, remote.key):  # manifest first, as on disk
                client.delete_object(Bucket=bucket.bucket_name, Key=full_key(bucket, key))
            pruned.append(remote.key)
    if pruned:
        run_logger().info("Pruned %d offsite backup(s)", len(pruned))
    return sorted(pruned)
