"""Exports with includeProofs (issue 16.6): the proof bundle of a window as JSON, NDJSON or Parquet, written by the
export job (a real arq worker) or streamed at once, is checked by the offline verifier (`agentrail-verify`, also as
a command without the server's packages); a record edited afterwards is named. CSV cannot hold a bundle, and
filters other than the window would cut the chain: both refused before anything is written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from export_support import export_job, fetch_link, run_jobs, start_export

from app.audit import sealing
from app.audit.streams import STREAMS
from support import gql, register

VERIFY_SRC = Path(__file__).resolve().parents[2] / "sdk" / "verify" / "src"
sys.path.insert(0, str(VERIFY_SRC))
from agentrail_verify import verify_file  # noqa: E402

SUFFIX = {"JSON": "json", "NDJSON": "ndjson", "PARQUET": "parquet"}


@pytest.fixture
async def sealed(client, runtime):
    """An organisation with 300 sealed records (more than a kept block of 256), 4 unsealed after them, and
    activity events, sealed too."""
    account = await register(client)
    batch = [{"action": "pay", "prompt": f"send {i} USD", "metadata": {"i": i}} for i in range(300)]
    result = await gql(client, "LogEvents", {"input": batch}, token=account.token)
    account.ids = [r["id"] for r in result["data"]["logEvents"]]
    for i in range(3):
        assert "errors" not in await gql(client, "CreateAgent", {"input": {"name": f"a{i}"}}, token=account.token)
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS) >= 1
    result = await gql(client, "LogEvents", {"input": [{"action": f"u{i}"} for i in range(4)]}, token=account.token)
    account.ids += [r["id"] for r in result["data"]["logEvents"]]
    return account


async def _job_file(client, runtime, account, tmp_path, fmt, dataset="AUDIT_LOGS") -> Path:
    job = await start_export(client, account, dataset=dataset, format=fmt, includeProofs=True)
    assert job["includeProofs"] is True and job["status"] == "PENDING"
    await run_jobs(runtime)
    done = await export_job(client, account, job["id"])
    assert done["status"] == "READY", done
    response = await fetch_link(client, done["downloadUrl"])
    assert response.status_code == 200, response.text
    path = tmp_path / f"{dataset.lower()}-{fmt.lower()}.{SUFFIX[fmt]}"
    path.write_bytes(response.content)
    return path


async def _edit(runtime, table: str, column: str, value: str, row_id: str) -> None:
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        await conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE id = :id"), {"v": value, "id": row_id})
        await conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


@pytest.mark.parametrize("fmt", ["JSON", "NDJSON", "PARQUET"])
async def test_a_job_exports_a_bundle_the_offline_verifier_checks(client, runtime, sealed, tmp_path, fmt):
    path = await _job_file(client, runtime, sealed, tmp_path, fmt)
    report = verify_file(str(path), runtime.signer.public_key)
    assert report.ok and report.records == 304 and report.roots_checked == 1, report.breaks
    target = sealed.ids[7]
    await _edit(runtime, "audit_logs", "prompt", "send 10000000 USD to acct 666", target)
    report = verify_file(str(await _job_file(client, runtime, sealed, tmp_path, fmt)), runtime.signer.public_key)
    assert not report.ok and report.breaks[0]["recordId"] == target, report.breaks


async def test_the_activity_trail_by_job_and_the_json_form_at_once(client, runtime, sealed, tmp_path):
    path = await _job_file(client, runtime, sealed, tmp_path, "JSON", dataset="ACTIVITY")
    report = verify_file(str(path), runtime.signer.public_key)
    assert report.ok and report.records >= 3 and report.roots_checked == 1, report.breaks
    # the synchronous endpoint gives the same JSON form with format=json
    response = await client.get(
        "/api/v1/activity/export?includeProofs=true&format=json", headers={"Authorization": f"Bearer {sealed.token}"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["kind"] == "ActivityExport" and body["bundle"]["stream"] == "activity"
    assert len(body["records"]) == report.records
    (tmp_path / "sync.json").write_bytes(response.content)
    assert verify_file(str(tmp_path / "sync.json"), runtime.signer.public_key).ok


async def test_the_command_line_verifier_reads_a_job_bundle_without_the_server(client, runtime, sealed, tmp_path):
    path = await _job_file(client, runtime, sealed, tmp_path, "NDJSON")
    keys = (await client.get("/.well-known/agentrail-audit-keys.json")).json()["keys"]
    (tmp_path / "key.pem").write_text(keys[-1]["publicKeyPem"])
    python = str(Path(sys.base_prefix) / "bin" / "python3")  # the base interpreter: stdlib and cryptography only
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [python, "-m", "agentrail_verify", str(path), "--public-key", str(tmp_path / "key.pem")]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, cwd=VERIFY_SRC, timeout=60
    )
    assert done.returncode == 0 and "OK: 304 records" in done.stdout, done.stdout + done.stderr


async def test_csv_and_filters_beyond_the_window_are_refused_and_nothing_is_written(client, runtime, sealed):
    for input, field in (
        ({"format": "CSV"}, "format"),
        ({"format": "JSON", "auditLogFilter": {"agentId": ["agent_x"]}}, "filter.agentId"),
    ):
        result = await gql(
            client,
            "StartExport",
            {"input": {"dataset": "AUDIT_LOGS", "includeProofs": True, **input}},
            token=sealed.token,
        )
        error = result["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["field"] == field, error
    async with runtime.db.engine.connect() as conn:
        count = await conn.execute(sa.text("SELECT count(*) FROM export_jobs WHERE org_id = :o"), {"o": sealed.org_id})
        assert count.scalar_one() == 0
