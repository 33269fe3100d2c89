"""Reading with the SDK against a real server: GraphQL, traces, audit records page by page, live alerts over the
WebSocket (through a server restart, resumed from the last cursor, async too), and the OpenTelemetry helper."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from graphql import build_schema, parse, validate

from agentrail import Agentrail, AsyncAgentrail, GraphQLError
from agentrail.reading import DOCUMENTS
from support import ROOT

from .conftest import Account, Database, Server


def test_the_sdk_documents_are_valid_against_the_schema():
    schema = build_schema((ROOT / "schema.graphql").read_text())
    for name, document in DOCUMENTS.items():
        assert validate(schema, parse(document)) == [], name


def test_graphql_trace_and_paged_audit_logs(server: Server, account: Account):
    client = Agentrail(api_key=account.key, base_url=server.url, flush_interval=0.05)
    with client.trace("paged") as run:
        for n in range(249):
            client.log("step", metadata={"n": n})
    assert client.flush(20) is True
    assert client.graphql("{ me { kind } }")["me"] == {"kind": "API_KEY"}
    with pytest.raises(GraphQLError) as bad:
        client.graphql("{ auditLogs(first: 100000) { edges { cursor } } }")
    assert bad.value.code == "BAD_USER_INPUT"

    trace = client.get_trace(run.trace_id)
    assert trace is not None and trace["spanCount"] == 250 and len(trace["spans"]) == 250
    assert {s["depth"] for s in trace["spans"]} == {0, 1}
    assert client.get_trace("no-such-trace") is None

    records = list(client.audit_logs(page_size=100))
    assert len(records) == 250 and len({r["id"] for r in records}) == 250
    steps = list(client.audit_logs({"action": ["step"]}, page_size=40, limit=90))
    assert len(steps) == 90 and {r["action"] for r in steps} == {"step"}
    client.close()


def _pattern_rule(account: Account) -> None:
    account.gql(
        "CreateComplianceRule",
        {"input": {"name": "codes", "kind": "PATTERN", "config": {"pattern": r"PRJ-\d{4}"}, "appliesTo": ["PROMPT"]}},
    )


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_live_alerts_survive_a_server_restart_and_resume_from_the_cursor(
    server: Server, account: Account, db: Database
):
    _pattern_rule(account)
    client = Agentrail(api_key=account.key, base_url=server.url, flush_interval=0.02)
    stream = client.alerts()
    received: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    time.sleep(1.0)  # subscribed
    for n in range(3):
        client.log("llm_call", prompt=f"see PRJ-000{n}")
    assert client.flush(10) is True
    _until(lambda: len(received) == 3, 20, "three live alerts")

    server.kill()
    server.start()
    for n in range(3, 6):
        client.log("llm_call", prompt=f"see PRJ-000{n}")
    assert client.flush(30) is True
    _until(lambda: len(received) == 6, 40, "the alerts after the restart")
    stream.close()
    reader.join(10)
    assert not reader.is_alive()
    stored = [r[0] for r in db.rows("SELECT id FROM alerts WHERE org_id = :o ORDER BY id", o=account.org_id)]
    assert sorted(a["id"] for a in received) == stored and len(stored) == 6  # each once, none missed
    assert stream.reconnects >= 1 and stream.cursor == received[-1]["cursor"]

    async def replay() -> list[dict[str, Any]]:
        async with AsyncAgentrail(api_key=account.key, base_url=server.url) as aclient:
            astream = aclient.alerts(after=received[2]["cursor"])
            got = []
            async for alert in astream:
                got.append(alert)
                if len(got) == 3:
                    break
            await astream.aclose()
            return got

    replayed = asyncio.run(asyncio.wait_for(replay(), 30))
    assert [a["id"] for a in replayed] == [a["id"] for a in received[3:]]  # the replay after that cursor
    client.close()


def test_opentelemetry_helper_exports_to_agentrail(server: Server, account: Account, db: Database):
    from agentrail.otel import configure

    provider = configure(api_key=account.key, base_url=server.url, agent="otel-bot", set_global=False, batch=False)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
        with tracer.start_as_current_span("execute_tool refund"):
            pass
    provider.shutdown()
    rows = db.records(account.org_id)
    assert len(rows) == 2 and len({r.trace_id for r in rows}) == 1
    [agent] = account.gql("{ agents { edges { node { id name } } } }")["agents"]["edges"]
    assert agent["node"]["name"] == "otel-bot" and {r.agent_id for r in rows} == {agent["node"]["id"]}
