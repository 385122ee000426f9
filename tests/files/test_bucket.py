"""Files kept in an S3-compatible bucket: moto's standalone S3 server, a real HTTP server on
loopback speaking the S3 API, with the gateway's boto3 client signing its requests with
the keys the settings name as secrets."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from conftest import Serve
from PIL import Image

from gateway.api.auth import key_hash, new_key

KEYS = {"S3_KEY": "test-key-id", "S3_SECRET": "test-secret-key", "FILES_SECRET": "f" * 40}
CONFIG = """
kind: settings
secrets: [S3_KEY, S3_SECRET, FILES_SECRET]
files:
  secret: "{{{{ secrets.FILES_SECRET }}}}"
  s3:
    bucket: {bucket}
    prefix: kept/
    endpoint_url: {endpoint}
    region: us-east-1
    access_key_id: "{{{{ secrets.S3_KEY }}}}"
    secret_access_key: "{{{{ secrets.S3_SECRET }}}}"
---
kind: data_type
name: listing
api: {{expose: true}}
fields:
  photo: {{type: image}}
  lease: {{type: file, private: true}}
"""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert server.poll() is None, "the S3 server exited"
                assert time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def bucket_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEYS["S3_KEY"],
                        aws_secret_access_key=KEYS["S3_SECRET"])


def keys_in(endpoint: str, bucket: str) -> list[str]:
    listed = bucket_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", ()))


@pytest.fixture
async def bucket(serve: Serve, storage_url: str, s3_endpoint: str,
                 request: pytest.FixtureRequest) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                         dict[str, str], str]]:
    name = f"b{abs(hash(request.node.nodeid)) % 10**9}"
    bucket_client(s3_endpoint).create_bucket(Bucket=name)
    config = CONFIG.format(bucket=name, endpoint=s3_endpoint)
    async with serve(config, storage_url, environment=KEYS) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        yield gateway.client, {"Authorization": f"Bearer {key}"}, name


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(out, "PNG")
    return out.getvalue()


async def test_files_round_trip_through_the_bucket(
        bucket: tuple[httpx.AsyncClient, dict[str, str], str], s3_endpoint: str) -> None:
    client, admin, name = bucket
    picture, lease = png(), b"%PDF-1.4 lease" * 1000
    made = await client.post("/api/1.1/obj/listing", headers=admin, json={
        "photo": {"filename": "p.png", "contents": base64.b64encode(picture).decode()},
        "lease": {"filename": "l.pdf", "contents": base64.b64encode(lease).decode()}})
    assert made.status_code == 201, made.text
    id = made.json()["id"]
    record = (await client.get(f"/api/1.1/obj/listing/{id}", headers=admin)).json()["response"]
    assert (await client.get(record["photo"])).content == picture
    assert (await client.get(record["lease"])).content == lease
    assert (await client.get(record["lease"].split("?")[0])).status_code == 403
    kept = keys_in(s3_endpoint, name)
    assert len(kept) == 4 and all(k.startswith("kept/") for k in kept)

    assert (await client.delete(f"/api/1.1/obj/listing/{id}", headers=admin)).status_code == 204
    assert (await client.get(record["photo"])).status_code == 404
    for _ in range(50):
        if not keys_in(s3_endpoint, name):
            break
        await asyncio.sleep(0.1)
    assert keys_in(s3_endpoint, name) == []


async def test_a_refused_image_leaves_the_bucket_empty(
        bucket: tuple[httpx.AsyncClient, dict[str, str], str], s3_endpoint: str) -> None:
    client, admin, name = bucket
    made = await client.post("/api/1.1/obj/listing", headers=admin, json={
        "photo": {"filename": "p.png", "contents": base64.b64encode(b"GIF89a lies").decode()}})
    assert made.status_code == 400
    assert keys_in(s3_endpoint, name) == []


async def test_bytes_gone_from_the_bucket_are_a_clean_404(
        bucket: tuple[httpx.AsyncClient, dict[str, str], str], s3_endpoint: str) -> None:
    client, admin, name = bucket
    made = await client.post("/api/1.1/obj/listing", headers=admin, json={
        "photo": {"filename": "p.png", "contents": base64.b64encode(png()).decode()}})
    id = made.json()["id"]
    photo = (await client.get(f"/api/1.1/obj/listing/{id}", headers=admin)).json()[
        "response"]["photo"]
    bucket_client(s3_endpoint).delete_object(Bucket=name, Key="kept/" + photo.split("/")[2])
    assert (await client.get(photo)).status_code == 404
    assert (await client.head(photo)).status_code == 404
