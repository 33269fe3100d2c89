"""Chunked file storage, signed download links and the jobUpdates subscription."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.db import new_id, utcnow
from app.files.models import StoredFileChunk
from app.files.store import FileStore
from app.jobs.service import JobUpdate, publish_job_update, signed_download_url
from app.runtime.signed_links import sign_path, verify_path
from support import GraphQLWebSocket, register


async def _read_all(store: FileStore, file) -> bytes:
    return b"".join([chunk async for chunk in store.chunks(file)])


async def test_a_file_is_written_in_chunks_and_read_back_whole(client, runtime):
    account = await register(client)
    store = FileStore(runtime.db, chunk_size=1000)
    payload = bytes(range(256)) * 17  # 4,352 bytes: four full chunks and a partial one
    file_id = new_id("file")
    async with store.writer(account.org_id, file_id, filename="a.bin", content_type="application/octet-stream") as w:
        for start in range(0, len(payload), 300):
            await w.write(payload[start : start + 300])
    assert w.file.chunk_count == 5 and w.file.size_bytes == len(payload)
    assert w.file.sha256 == hashlib.sha256(payload).hexdigest()
    stored = await store.get(account.org_id, file_id)
    assert stored is not None and stored.complete
    assert await _read_all(store, stored) == payload


async def test_an_empty_file_is_complete(client, runtime):
    account = await register(client)
    file_id = new_id("file")
    async with runtime.files.writer(account.org_id, file_id, filename="e.csv", content_type="text/csv"):
        pass
    stored = await runtime.files.get(account.org_id, file_id)
    assert stored is not None and stored.size_bytes == 0
    assert await _read_all(runtime.files, stored) == b""


async def test_a_failed_write_leaves_nothing_and_a_rewrite_starts_over(client, runtime):
    account = await register(client)
    store = FileStore(runtime.db, chunk_size=10)
    file_id = new_id("file")
    with pytest.raises(RuntimeError):
        async with store.writer(account.org_id, file_id, filename="x", content_type="text/plain") as w:
            await w.write(b"0123456789abcdef")
            raise RuntimeError("worker died")
    assert await store.get(account.org_id, file_id) is None
    async with runtime.db.system_session() as session:
        left = (await session.execute(sa.select(sa.func.count()).select_from(StoredFileChunk))).scalar_one()
    assert left == 0
    # a half-written file (a crash before the end) is never served, and writing it again starts from nothing
    writer = store.writer(account.org_id, file_id, filename="x", content_type="text/plain")
    await writer.__aenter__()
    await writer.write(b"first attempt, long enough to flush")
    assert await store.get(account.org_id, file_id) is None
    async with store.writer(account.org_id, file_id, filename="x", content_type="text/plain") as again:
        await again.write(b"second")
    stored = await store.get(account.org_id, file_id)
    assert stored is not None and await _read_all(store, stored) == b"second"


async def test_files_are_invisible_to_other_organisations_and_expire(client, runtime):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    file_id = new_id("file")
    soon = utcnow() + timedelta(hours=1)
    async with runtime.files.writer(alice.org_id, file_id, filename="a", content_type="text/plain", expires_at=soon):
        pass
    assert await runtime.files.get(mallory.org_id, file_id) is None
    assert await runtime.files.get(alice.org_id, file_id) is not None
    assert await runtime.files.delete_expired(utcnow()) == 0
    assert await runtime.files.delete_expired(soon + timedelta(seconds=1)) == 1
    assert await runtime.files.get(alice.org_id, file_id) is None


def test_signed_links_are_bound_to_path_and_time():
    now = utcnow()
    link = sign_path("secret", "/api/v1/exports/exp_1/download", "org_a", now + timedelta(minutes=5))
    path, query = link.split("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    expires, signature = params["expires"], params["signature"]
    assert params["org"] == "org_a"
    assert verify_path("secret", path, "org_a", expires, signature, now)
    assert not verify_path("secret", "/api/v1/exports/exp_2/download", "org_a", expires, signature, now)
    assert not verify_path("secret", path, "org_b", expires, signature, now)
    assert not verify_path("other", path, "org_a", expires, signature, now)
    assert not verify_path("secret", path, "org_a", str(int(expires) + 60), signature, now)
    assert not verify_path("secret", path, "org_a", expires, signature, now + timedelta(minutes=6))
    assert not verify_path("secret", path, "org_a", "soon", signature, now)
    assert not verify_path("secret", path, "org_a", None, None, now)


def test_download_urls_are_absolute_and_never_outlive_the_file(settings):
    not_after = utcnow() + timedelta(minutes=1)
    url = signed_download_url(settings, "s", "/api/v1/reports/rep_1/download", "org_a", not_after=not_after)
    assert url.startswith("http") and "/api/v1/reports/rep_1/download?org=org_a&expires=" in url
    assert int(url.split("expires=")[1].split("&")[0]) <= not_after.timestamp()


async def test_job_updates_reach_only_the_requester(client, live_server, runtime):
    alice = await register(client, org="Alice")
    bob = await register(client, org="Bob")
    sockets = {}
    for name, account in (("alice", alice), ("bob", bob)):
        ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe("JobUpdates", {})
        sockets[name] = ws
    await asyncio.sleep(0.2)
    try:
        update = JobUpdate(job_id="exp_1", kind="export", status="READY", progress=1.0, row_count=10)
        await publish_job_update(runtime.broadcaster, alice.org_id, alice.user_id, update)
        message = await sockets["alice"].receive()
        data = message["payload"]["data"]["jobUpdates"]
        assert data["jobId"] == "exp_1" and data["kind"] == "EXPORT" and data["status"] == "READY"
        assert data["rowCount"] == 10 and data["updatedAt"].endswith("Z")
        with pytest.raises(asyncio.TimeoutError):
            await sockets["bob"].receive(0.5)
    finally:
        for ws in sockets.values():
            await ws.close()
