"""Tracing with the SDK against a real server: traces and spans nest through context variables (threads with
`agentrail.wrap`, asyncio tasks), `@observe` on sync and async functions, and the async client."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import agentrail
from agentrail import Agentrail, AsyncAgentrail

from .conftest import Account, Database, Server


def _spans(db: Database, account: Account) -> dict[str, object]:
    return {r.action: r for r in db.records(account.org_id)}


def test_trace_and_spans_nest_measure_and_carry_errors(server: Server, account: Account, db: Database):
    agent = account.gql("CreateAgent", {"input": {"name": "support-bot"}})["createAgent"]["id"]
    client = Agentrail(api_key=account.key, base_url=server.url, flush_interval=0.05)
    with client.trace("refund-run", agent="support-bot") as run:
        assert agentrail.current_span() is run
        with client.span("tool_use", verb="stripe:create_refund", risk_level="HIGH") as span:
            client.log("llm_call", prompt="may I refund?")
            span.result = {"refund": "re_123"}
            span.metadata["order"] = 1234
        with pytest.raises(RuntimeError), client.span("flaky_tool"):
            raise RuntimeError("card declined")
        run.log("note", response="done")
    assert agentrail.current_span() is None
    assert client.flush(10) is True
    spans = _spans(db, account)
    root, tool, llm, flaky, note = (spans[a] for a in ("refund-run", "tool_use", "llm_call", "flaky_tool", "note"))
    assert {s.trace_id for s in spans.values()} == {run.trace_id}
    assert root.parent_span_id is None and root.span_id == run.span_id
    assert tool.parent_span_id == root.span_id and flaky.parent_span_id == root.span_id
    assert llm.parent_span_id == tool.span_id and note.parent_span_id == root.span_id
    assert (tool.verb, tool.risk_level, tool.result, tool.metadata) == (
        "stripe:create_refund",
        "HIGH",
        {"refund": "re_123"},
        {"order": 1234},
    )
    assert flaky.status == "error" and flaky.metadata["error"] == {"type": "RuntimeError", "message": "card declined"}
    assert root.duration_ms >= tool.duration_ms >= 0 and root.occurred_at <= tool.occurred_at
    assert all(s.agent_id == agent for s in spans.values())
    tree = account.gql("TraceTree", {"traceId": run.trace_id}, token=False)["trace"]
    assert tree["spanCount"] == 5
    [top] = tree["rootSpans"]
    assert top["action"] == "refund-run"
    assert sorted(c["action"] for c in top["children"]) == ["flaky_tool", "note", "tool_use"]
    client.close()


def test_spans_follow_threads_through_wrap_and_asyncio_tasks(server: Server, account: Account, db: Database):
    client = Agentrail(api_key=account.key, base_url=server.url, flush_interval=0.05)
    with client.trace("fan-out") as run:

        def work(name: str) -> None:
            with client.span(name):
                client.log(f"{name}-event")

        threads = [threading.Thread(target=agentrail.wrap(work), args=(f"thread-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(agentrail.wrap(work), "pooled").result()
        unlinked = threading.Thread(target=work, args=("unwrapped",))  # a thread starts with an empty context
        unlinked.start()
        unlinked.join()

        async def task(name: str) -> None:
            with client.span(name):
                await asyncio.sleep(0.01)
                client.log(f"{name}-event")

        async def gather() -> None:
            async with client.span("async-parent"):
                await asyncio.gather(task("task-a"), task("task-b"))

        asyncio.run(gather())  # asyncio.run copies the current context into the loop's tasks
    assert client.flush(10) is True
    spans = _spans(db, account)
    root = spans["fan-out"]
    for name in ("thread-0", "thread-1", "pooled", "async-parent"):
        assert spans[name].parent_span_id == root.span_id and spans[name].trace_id == run.trace_id, name
    for name in ("thread-0", "thread-1", "pooled", "task-a", "task-b"):
        assert spans[f"{name}-event"].parent_span_id == spans[name].span_id, name
    assert spans["task-a"].parent_span_id == spans["async-parent"].span_id
    assert spans["unwrapped"].trace_id != run.trace_id and spans["unwrapped"].parent_span_id is None
    client.close()


def test_observe_sync_and_async_functions(server: Server, account: Account, db: Database):
    client = Agentrail(api_key=account.key, base_url=server.url, flush_interval=0.05)

    @client.observe(verb="math:add")
    def add(a: int, b: int = 2) -> int:
        return a + b

    @client.observe("lookup")
    async def lookup(key: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"key": key}

    @client.observe(capture_args=False)
    def fail(secret: str) -> None:
        raise ValueError("nope")

    with client.trace("observed"):
        assert add(1) == 3
        assert asyncio.run(lookup("k")) == {"key": "k"}
        with pytest.raises(ValueError):
            fail("hunter2")
    assert add.__name__ == "add"
    assert client.flush(10) is True
    spans = _spans(db, account)
    name = "test_observe_sync_and_async_functions.<locals>.add"
    assert (spans[name].args, spans[name].result, spans[name].verb) == ({"a": 1}, 3, "math:add")
    assert (spans["lookup"].args, spans["lookup"].result) == ({"key": "k"}, {"key": "k"})
    failed = spans["test_observe_sync_and_async_functions.<locals>.fail"]
    assert failed.status == "error" and failed.args is None and failed.metadata["error"]["type"] == "ValueError"
    root = spans["observed"]
    assert all(s.parent_span_id == root.span_id for a, s in spans.items() if a != "observed")
    client.close()


def test_async_client_has_the_same_api(server: Server, account: Account, db: Database):
    async def main() -> tuple[bool, str]:
        async with AsyncAgentrail(api_key=account.key, base_url=server.url, flush_interval=0.05) as client:

            @client.observe()
            async def step(n: int) -> int:
                return n * 2

            async with client.trace("async-run") as run:
                async with client.span("tool_use") as span:
                    span.result = await step(21)
                client.log("llm_call", prompt="hi")
            return await client.flush(10), run.trace_id

    flushed, trace_id = asyncio.run(main())
    assert flushed is True
    spans = _spans(db, account)
    assert {s.trace_id for s in spans.values()} == {trace_id}
    assert spans["tool_use"].result == 42
    assert spans["test_async_client_has_the_same_api.<locals>.main.<locals>.step"].parent_span_id == (
        spans["tool_use"].span_id
    )
    assert spans["llm_call"].parent_span_id == spans["async-run"].span_id
