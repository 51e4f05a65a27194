"""A local S3 stand-in: moto's server mode on a loopback port, spoken to by real boto3."""

from __future__ import annotations

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "investflow-test-key"
SECRET_KEY = "investflow-test-secret"
REGION = "ap-northeast-2"


class FakeS3:
    """`with FakeS3() as s3:` starts moto on 127.0.0.1:<free port>; `.url` is its endpoint."""

    def __init__(self, bucket: str = "investflow-backups-test"):
        self.bucket = bucket
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> FakeS3:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.client().create_bucket(
            Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, prefix: str = "") -> set[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def checksum_sha256(self, key: str) -> str | None:
        """The SHA-256 (base64) the store kept for key, as S3 reports it."""
        head = self.client().head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        return head.get("ChecksumSHA256")

    def save_blocks(self, folder: str = "") -> None:
        """Register the AwsCredentials and S3Bucket blocks the backup flows load by name.

        The endpoint is not in the block: the flows take it from INVESTFLOW_S3_ENDPOINT_URL.
        """
        from prefect_aws import AwsCredentials, S3Bucket

        from blocks.names import AWS_CREDENTIALS, BACKUP_BUCKET

        creds = AwsCredentials(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        creds.save(AWS_CREDENTIALS, overwrite=True)
        S3Bucket(bucket_name=self.bucket, credentials=creds, bucket_folder=folder).save(
            BACKUP_BUCKET, overwrite=True
        )

    @staticmethod
    def delete_blocks() -> None:
        from prefect_aws import AwsCredentials, S3Bucket

        from blocks.names import AWS_CREDENTIALS, BACKUP_BUCKET

        for cls, name in ((S3Bucket, BACKUP_BUCKET), (AwsCredentials, AWS_CREDENTIALS)):
            try:
                cls.delete(name)
            except ValueError:
                pass
