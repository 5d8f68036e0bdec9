"""A real S3-compatible server (moto) on loopback for the tests that read or write s3:// URIs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def local_s3(mp: pytest.MonkeyPatch, *buckets: str) -> Iterator[tuple[object, str]]:
    """Start moto on a free port, point boto3/s3fs/fsspec at it through the environment, create `buckets`;
    yields (boto3 client, endpoint URL). Skips the test when moto or s3fs is not installed."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    import boto3
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint,
                           "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem would still talk to an earlier server
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        try:
            yield client, endpoint
        finally:
            fsspec.config.conf.pop("s3", None)
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
