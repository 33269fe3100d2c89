"""Shared steps of the report tests: request, build with a real arq worker, read and download."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from support import Account, gql
from workers.settings import run_worker


def window(hours_before: float = 24, hours_after: float = 1) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "from": (now - timedelta(hours=hours_before)).isoformat(),
        "to": (now + timedelta(hours=hours_after)).isoformat(),
    }


async def agent(client, account: Account, name: str) -> str:
    result = await gql(client, "CreateAgent", {"input": {"name": name}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createAgent"]["id"]


async def log(client, account: Account, records: list[dict[str, Any]]) -> list[str]:
    result = await gql(
        client, "LogEvents", {"input": [{"action": "llm_call", **r} for r in records]}, token=account.token
    )
    assert "errors" not in result, result
    return [r["id"] for r in result["data"]["logEvents"]]


async def request(client, account: Account, **input_: Any) -> dict[str, Any]:
    result = await gql(client, "RequestReport", {"input": {**window(), **input_}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["requestReport"]


async def read(client, account: Account, report_id: str) -> dict[str, Any] | None:
    result = await gql(client, "Report", {"id": report_id}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["report"]


async def build(runtime) -> None:
    """Drains the queue with a real arq worker."""
    await run_worker(runtime, burst=True)


async def ready(client, runtime, account: Account, **input_: Any) -> dict[str, Any]:
    report = await request(client, account, **input_)
    await build(runtime)
    done = await read(client, account, report["id"])
    assert done is not None and done["status"] == "READY", done
    return done


def local(url: str) -> str:
    """The path and query of an absolute download link, for the in-process client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def download(client, report: dict[str, Any]):
    response = await client.get(local(report["downloadUrl"]))
    assert response.status_code == 200, response.text
    return response


async def count(runtime, table: str, where: str = "TRUE") -> int:
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar_one()
