"""Checkpoint storage: whole files in a folder, or objects in an S3Bucket block."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.models.storage import LocalStorage, S3Storage


def test_local_storage_writes_whole_files(tmp_path):
    storage = LocalStorage(tmp_path / "models")
    uri = storage.put("US/v1.pt", b"weights")
    assert uri.startswith("file://") and storage.get(uri) == b"weights"
    assert not list((tmp_path / "models" / "US").glob("*.tmp"))


@pytest.mark.integration
def test_s3_storage_round_trip_through_a_bucket_block():
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from prefect_aws.s3 import S3Bucket

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ).create_bucket(Bucket="models")
        block = S3Bucket(
            bucket_name="models",
            bucket_folder="investflow",
            credentials=AwsCredentials(
                aws_access_key_id="x",
                aws_secret_access_key="x",
                region_name="us-east-1",
                aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
            ),
        )
        storage = S3Storage(block)
        uri = storage.put(f"US/{dt.date(2024, 1, 2):%Y%m%d}.pt", b"weights")
        assert uri == "s3://models/investflow/US/20240102.pt"
        assert storage.get(uri) == b"weights"
    finally:
        server.stop()
