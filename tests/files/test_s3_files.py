"""File storage in an S3-compatible bucket: a local moto server on a free loopback port, reached by the
real boto3 client through `endpoint_url`, exactly as a MinIO or R2 install would be."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from datetime import timedelta

import boto3
import httpx
import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.routing import Route

from app.db import new_id, utcnow
from app.files import store as files_module
from app.files.models import StoredFile, StoredFileChunk
from app.files.store import S3_MIN_PART_SIZE, FileStore, S3Objects
from app.rest.downloads import download
from app.runtime.signed_links import sign_path
from app.settings import ConfigurationError, Settings
from support import register

KEY_ID, SECRET = "test-key-id", "test-secret-access-key-do-not-log"
PART = S3_MIN_PART_SIZE  # moto enforces S3's 5 MiB minimum for every part but the last, as AWS does
_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """A raw client for looking into the bucket, and a fresh bucket for the test."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    bucket = f"agentrail-files-{next(_buckets)}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    client.close()


@pytest.fixture
async def store(runtime, s3, s3_endpoint):
    _, bucket = s3
    backend = S3Objects(
        bucket=bucket,
        prefix="files/",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        addressing_style="path",
        part_size=PART,
        read_size=256 * 1024,
        max_concurrency=4,
    )
    file_store = FileStore(runtime.db, s3=backend)
    yield file_store
    await file_store.close()


def _payload(size: int) -> bytes:
    block = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(2048))  # 64 KiB, no repeats inside
    return (block * (size // len(block) + 1))[:size]


def _keys(s3) -> list[str]:
    client, bucket = s3
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


async def _read_all(store: FileStore, file) -> bytes:
    return b"".join([chunk async for chunk in store.chunks(file)])


async def _count(runtime, model) -> int:
    async with runtime.db.system_session() as session:
        return (await session.execute(sa.select(sa.func.count()).select_from(model))).scalar_one()


async def test_a_large_file_is_one_object_written_in_parts_and_streamed_back(client, runtime, store, s3):
    account = await register(client)
    payload = _payload(2 * PART + 123_457)  # two full parts and a short last one
    file_id = new_id("file")
    async with store.writer(account.org_id, file_id, filename="big.bin", content_type="application/pdf") as w:
        for start in range(0, len(payload), 1024 * 1024):
            await w.write(payload[start : start + 1024 * 1024])
            assert w.bytes_written == min(start + 1024 * 1024, len(payload))
    assert w.file.size_bytes == len(payload) and w.file.chunk_count == 3
    assert w.file.sha256 == hashlib.sha256(payload).hexdigest()

    stored = await store.get(account.org_id, file_id)
    assert stored is not None and stored.storage == "s3"
    assert stored.object_key == f"files/{account.org_id}/{file_id}"
    pieces = [chunk async for chunk in store.chunks(stored)]
    assert b"".join(pieces) == payload
    assert max(len(piece) for piece in pieces) <= 256 * 1024  # streamed, not read whole

    raw, bucket = s3
    head = raw.head_object(Bucket=bucket, Key=stored.object_key)
    assert head["ContentLength"] == len(payload) and head["ContentType"] == "application/pdf"
    assert head["ETag"].strip('"').endswith("-3")  # a real three-part multipart upload
    assert raw.head_object(Bucket=bucket, Key=stored.object_key, ChecksumMode="ENABLED").get("ChecksumCRC32")
    assert _keys(s3) == [stored.object_key]
    assert await _count(runtime, StoredFileChunk) == 0  # no bytes in PostgreSQL


async def test_small_and_empty_files_are_single_objects(client, store, s3):
    account = await register(client)
    empty_id, small_id = new_id("file"), new_id("file")
    async with store.writer(account.org_id, empty_id, filename="e.csv", content_type="text/csv"):
        pass
    async with store.writer(account.org_id, small_id, filename="s.csv", content_type="text/csv") as w:
        await w.write(b"a,b\n")
        await w.write(b"1,2\n")
    empty = await store.get(account.org_id, empty_id)
    small = await store.get(account.org_id, small_id)
    assert empty is not None and empty.size_bytes == 0 and empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert await _read_all(store, empty) == b""
    assert small is not None and await _read_all(store, small) == b"a,b\n1,2\n"
    raw, bucket = s3
    assert raw.head_object(Bucket=bucket, Key=empty.object_key)["ContentLength"] == 0
    assert len(_keys(s3)) == 2


async def test_a_failed_write_leaves_no_object_no_upload_and_no_row(client, runtime, store, s3):
    account = await register(client)
    file_id = new_id("file")
    with pytest.raises(RuntimeError):
        async with store.writer(account.org_id, file_id, filename="x", content_type="text/plain") as w:
            await w.write(_payload(PART + 10))  # one part already uploaded
            raise RuntimeError("worker died")
    assert await store.get(account.org_id, file_id) is None
    assert await _count(runtime, StoredFile) == 0
    assert _keys(s3) == []
    raw, bucket = s3
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted


async def test_a_part_the_bucket_refuses_fails_the_write_cleanly(client, runtime, store, s3):
    """Completing fails (S3 refuses a first part under 5 MiB): the upload is aborted, nothing stays."""
    account = await register(client)
    store.backend.part_size = 1024  # below S3's minimum: the bucket rejects the multipart upload
    file_id = new_id("file")
    with pytest.raises(Exception, match="EntityTooSmall"):
        async with store.writer(account.org_id, file_id, filename="x", content_type="text/plain") as w:
            await w.write(_payload(3000))
    assert await _count(runtime, StoredFile) == 0 and _keys(s3) == []
    raw, bucket = s3
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_a_rewrite_replaces_the_object(client, store, s3):
    account = await register(client)
    file_id = new_id("file")
    async with store.writer(account.org_id, file_id, filename="r", content_type="text/plain") as w:
        await w.write(_payload(PART + 1))
    # a crash half-way through the next attempt: the file is no longer served, its old object is gone
    crashed = store.writer(account.org_id, file_id, filename="r", content_type="text/plain")
    await crashed.__aenter__()
    await crashed.write(b"first attempt")
    assert await store.get(account.org_id, file_id) is None
    assert _keys(s3) == []
    async with store.writer(account.org_id, file_id, filename="r", content_type="text/plain") as again:
        await again.write(b"second")
    stored = await store.get(account.org_id, file_id)
    assert stored is not None and await _read_all(store, stored) == b"second"
    raw, bucket = s3
    assert _keys(s3) == [stored.object_key]
    assert raw.get_object(Bucket=bucket, Key=stored.object_key)["Body"].read() == b"second"


async def test_files_are_invisible_to_other_organisations(client, store, s3):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    file_id = new_id("file")
    async with store.writer(alice.org_id, file_id, filename="a", content_type="text/plain") as w:
        await w.write(b"alice's")
    assert await store.get(mallory.org_id, file_id) is None
    await store.delete(mallory.org_id, file_id)  # finds nothing, removes nothing
    stored = await store.get(alice.org_id, file_id)
    assert stored is not None and await _read_all(store, stored) == b"alice's"
    assert _keys(s3) == [f"files/{alice.org_id}/{file_id}"]
    await store.delete(alice.org_id, file_id)
    assert await store.get(alice.org_id, file_id) is None and _keys(s3) == []


async def test_expiry_removes_rows_and_objects_in_batches(client, runtime, store, s3, monkeypatch):
    monkeypatch.setattr(files_module, "EXPIRED_BATCH", 2)
    monkeypatch.setattr(files_module, "S3_DELETE_BATCH", 2)
    alice = await register(client, org="Alice")
    bob = await register(client, org="Bob")
    soon, later = utcnow() + timedelta(hours=1), utcnow() + timedelta(days=1)
    expiring, kept = [], []
    for org_id, expires_at, bucket in [
        (alice.org_id, soon, expiring),
        (alice.org_id, soon, expiring),
        (bob.org_id, soon, expiring),
        (bob.org_id, soon, expiring),
        (bob.org_id, soon, expiring),
        (alice.org_id, later, kept),
        (bob.org_id, None, kept),
    ]:
        file_id = new_id("file")
        async with store.writer(org_id, file_id, filename="f", content_type="text/plain", expires_at=expires_at) as w:
            await w.write(file_id.encode())
        bucket.append((org_id, file_id))
    # a file written before the bucket was configured: still in PostgreSQL, still served and expired
    legacy_id = new_id("file")
    async with runtime.files.writer(alice.org_id, legacy_id, filename="l", content_type="text/plain", expires_at=soon):
        pass
    assert (await runtime.files.get(alice.org_id, legacy_id)).storage == "postgres"
    legacy = await store.get(alice.org_id, legacy_id)
    assert legacy is not None and await _read_all(store, legacy) == b""

    assert await store.delete_expired(utcnow()) == 0
    assert len(_keys(s3)) == 7
    assert await store.delete_expired(soon + timedelta(seconds=1)) == 6
    assert _keys(s3) == sorted(f"files/{org_id}/{file_id}" for org_id, file_id in kept)
    assert await _count(runtime, StoredFile) == 2 and await _count(runtime, StoredFileChunk) == 0
    for org_id, file_id in expiring:
        assert await store.get(org_id, file_id) is None
    for org_id, file_id in kept:
        assert await store.get(org_id, file_id) is not None


async def test_expired_s3_files_wait_while_no_bucket_is_configured(client, runtime, store, s3):
    account = await register(client)
    soon = utcnow() + timedelta(hours=1)
    file_id = new_id("file")
    async with store.writer(account.org_id, file_id, filename="f", content_type="text/plain", expires_at=soon):
        pass
    # runtime.files has no bucket: it cannot remove the object, so the row stays for a process that can
    assert await runtime.files.delete_expired(soon + timedelta(seconds=1)) == 0
    assert await _count(runtime, StoredFile) == 1 and len(_keys(s3)) == 1
    assert await store.delete_expired(soon + timedelta(seconds=1)) == 1
    assert _keys(s3) == []


async def test_download_over_http_streams_from_the_bucket(client, runtime, store, s3):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    payload = _payload(PART + 4321)
    file_id = new_id("file")
    async with store.writer(alice.org_id, file_id, filename='rep"ort.pdf', content_type="application/pdf") as w:
        await w.write(payload)

    async def file_of(rt, org_id, principal, resource_id):
        return resource_id  # the resource is the file itself

    async def route(request):
        return await download(request, request.path_params["id"], file_of)

    app = Starlette(routes=[Route("/files/{id}/download", route)])
    app.state.runtime = dataclasses.replace(runtime, files=store)
    path = f"/files/{file_id}/download"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.get(sign_path(runtime.secret_key, path, alice.org_id, utcnow() + timedelta(minutes=5)))
        assert response.status_code == 200
        assert response.content == payload
        assert response.headers["content-length"] == str(len(payload))
        assert response.headers["content-type"] == "application/pdf"
        assert response.headers["content-disposition"] == 'attachment; filename="report.pdf"'
        other = await http.get(sign_path(runtime.secret_key, path, mallory.org_id, utcnow() + timedelta(minutes=5)))
        assert other.status_code == 404


def test_settings_choose_the_backend_and_keep_credentials_secret(runtime):
    assert FileStore.from_settings(runtime.db, Settings(env="test")).backend.name == "postgres"
    settings = Settings(
        env="test",
        files_s3_bucket="exports",
        files_s3_endpoint_url="http://127.0.0.1:9000",
        files_s3_prefix="agentrail/",
        files_s3_access_key_id=KEY_ID,
        files_s3_secret_access_key=SECRET,
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    backend = FileStore.from_settings(runtime.db, settings).backend
    assert isinstance(backend, S3Objects) and backend.name == "s3" and backend.part_size == 8 * 1024 * 1024
    assert backend.key("org_1", "file_2") == "agentrail/org_1/file_2"
    with pytest.raises(ValueError, match="files_s3_part_size"):
        Settings(env="test", files_s3_bucket="exports", files_s3_part_size=1024 * 1024)
    with pytest.raises(ConfigurationError, match="both"):
        Settings(env="test", files_s3_bucket="exports", files_s3_access_key_id=KEY_ID)
