"""The SDK's logging against a real server: batching, acknowledgement, exactly once through lost answers and a
killed server, 429 with Retry-After, a full queue under each policy, oversize records, rejected records."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from agentrail import Agentrail, DropEvent, RecordTooLarge
from agentrail._records import MAX_JSON_BYTES, MAX_TEXT_BYTES, TRUNCATED_KEY, parse_ids

from .conftest import Account, Database, Proxy, Server, new_account


def _client(url: str, key: str, **options) -> Agentrail:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff_base", 0.05)
    options.setdefault("backoff_max", 0.5)
    return Agentrail(api_key=key, base_url=url, **options)


def test_seed_quick_start_call_works_as_written(server: Server, account: Account, db: Database, monkeypatch):
    from agentaudit import AgentAuditClient

    monkeypatch.setenv("AGENTRAIL_URL", server.url + "/api/v1")  # the seed's documented base URL
    client = AgentAuditClient(api_key=account.key)
    client.log(
        action="llm_call",
        prompt="Summarise the latest sales report",
        response="Q1 revenue was $2.4M...",
        metadata={"model": "gpt-4o", "tokens": 340},
    )
    assert client.flush(10) is True
    [row] = db.records(account.org_id)
    assert (row.action, row.prompt, row.response) == (
        "llm_call",
        "Summarise the latest sales report",
        "Q1 revenue was $2.4M...",
    )
    assert row.metadata == {"model": "gpt-4o", "tokens": 340}
    assert row.idempotency_key.startswith("sdk:")
    assert abs(row.occurred_at.timestamp() - time.time()) < 30
    assert client.close() is True


def test_every_field_batches_and_flush_means_acknowledged(server: Server, account: Account, db: Database):
    client = _client(server.url, account.key, batch_size=100)
    first = client.log(
        "tool_use",
        prompt="refund order 1234",
        response="done",
        metadata={"k": [1, 2]},
        trace_id="run-42",
        parent_span_id="root",
        duration_ms=12.5,
        status="error",
        execution_id="exec-1",
        verb="stripe:create_refund",
        provider="stripe",
        risk_level="HIGH",
        governance_status="approved",
        dry_run=True,
        idempotent=False,
        args={"amount": 10},
        result=["ok"],
        tenant_id="t1",
        occurred_at="2026-01-02T03:04:05Z",
    )
    for n in range(449):
        client.log("step", metadata={"n": n}, parent_span_id=first, trace_id="run-42")
    assert client.flush(30) is True
    stats = client.stats()
    assert (stats.logged, stats.acknowledged, stats.dropped_total, stats.queued, stats.in_flight) == (450, 450, 0, 0, 0)
    assert 5 <= stats.batches < 450  # batched, not one request per record
    rows = db.records(account.org_id)
    assert len(rows) == 450 and len({r.idempotency_key for r in rows}) == 450
    head = next(r for r in rows if r.span_id == first)
    assert (head.verb, head.provider, head.risk_level, head.status, head.duration_ms) == (
        "stripe:create_refund",
        "stripe",
        "HIGH",
        "error",
        12.5,
    )
    assert (head.args, head.result, head.tenant_id, head.dry_run, head.execution_id) == (
        {"amount": 10},
        ["ok"],
        "t1",
        True,
        "exec-1",
    )
    assert head.occurred_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert all(r.parent_span_id == first for r in rows if r.action == "step")
    assert client.close() is True


def test_answers_lost_after_the_write_are_retried_without_duplicates(proxy: Proxy, account: Account, db: Database):
    proxy.swallow_batches = 3  # the server writes these batches; the client never hears back
    client = _client(proxy.url, account.key, batch_size=50)
    for n in range(300):
        client.log("step", metadata={"n": n})
    assert client.flush(30) is True
    assert proxy.swallowed == 3
    keys = db.keys(account.org_id)
    assert len(keys) == 300 and len(set(keys)) == 300
    assert client.stats().retries >= 3 and client.stats().acknowledged == 300
    client.close()


def test_server_killed_and_restarted_mid_stream_every_record_exactly_once(
    server: Server, account: Account, db: Database
):
    client = _client(server.url, account.key, batch_size=20, flush_interval=0.02)
    total = 1500
    done = threading.Event()

    def produce() -> None:
        for n in range(total):
            client.log("step", metadata={"n": n})
            if n % 20 == 0:
                time.sleep(0.01)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    while client.stats().acknowledged < 200:
        time.sleep(0.01)
    server.kill()  # SIGKILL while batches are in flight
    time.sleep(1.0)
    server.start()
    producer.join(60)
    assert done.is_set()
    assert client.flush(60) is True
    keys = db.keys(account.org_id)
    assert len(keys) == total and len(set(keys)) == total
    ns = sorted(
        r[0] for r in db.rows("SELECT (metadata->>'n')::int FROM audit_logs WHERE org_id = :o", o=account.org_id)
    )
    assert ns == list(range(total))
    stats = client.stats()
    assert stats.retries > 0 and stats.acknowledged == total and stats.dropped_total == 0
    client.close()


def test_429_waits_for_retry_after_and_loses_nothing(database_url, redis_url, tmp_path, db: Database):
    limited = Server(
        database_url,
        redis_url,
        tmp_path,
        AGENTRAIL_ENFORCE_LIMITS="true",
        AGENTRAIL_PLAN_LIMITS=json.dumps({"free": {"requests_per_second": 1, "records_per_month": 1_000_000}}),
        AGENTRAIL_RATE_LIMIT_BURST_SECONDS="1",
    )
    limited.start()
    try:
        account = new_account(limited.url)
        seen: list[tuple[float, int, str | None]] = []

        class Recording(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                response = super().handle_request(request)
                if request.url.path.endswith("/batch"):
                    seen.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))
                return response

        client = _client(limited.url, account.key, batch_size=10, transport=Recording())
        for n in range(60):
            client.log("step", metadata={"n": n})
        assert client.flush(60) is True
        keys = db.keys(account.org_id)
        assert len(keys) == 60 and len(set(keys)) == 60
        refusals = [i for i, (_, status, _) in enumerate(seen) if status == 429]
        assert refusals, seen
        for i in refusals:
            at, _, retry_after = seen[i]
            assert retry_after is not None and float(retry_after) >= 1
            assert seen[i + 1][0] - at >= float(retry_after) * 0.95  # waited as asked, not the short backoff
        assert client.stats().retries == len(refusals)
        client.close()
    finally:
        limited.stop()


def _collect() -> tuple[list[DropEvent], object]:
    events: list[DropEvent] = []
    return events, events.append


def test_full_queue_block_policy_waits_then_drops_and_reports(
    proxy: Proxy, account: Account, db: Database, caplog: pytest.LogCaptureFixture
):
    events, on_drop = _collect()
    client = _client(
        proxy.url, account.key, batch_size=10, max_queue_records=30, queue_policy="block", block_ms=30, on_drop=on_drop
    )
    proxy.hold()  # the first batch is in flight and stuck: the queue fills
    caplog.set_level(logging.ERROR, logger="agentrail")
    waits = []
    for n in range(60):
        started = time.perf_counter()
        client.log("step", metadata={"n": n})
        waits.append(time.perf_counter() - started)
    stats = client.stats()
    in_flight = stats.in_flight  # the first batch, stuck in the proxy (10 records, fewer if it left early)
    assert stats.queued == 30 and 1 <= in_flight <= 10
    refused = 60 - 30 - in_flight
    assert stats.dropped == {"queue_full": refused}
    assert sum(e.count for e in events) == refused and {e.reason for e in events} == {"queue_full"}
    refused_ns = [json.loads(r)["metadata"]["n"] for e in events for r in e.records]
    assert all(waits[n] >= 0.027 for n in refused_ns)  # each waited block_ms (30 ms) for room, then was let go
    assert any("dropped 1 record(s) (queue_full" in r.getMessage() for r in caplog.records)
    proxy.release()
    assert client.flush(30) is False  # records were dropped: not everything was acknowledged
    dropped_keys = {k for e in events for k in e.idempotency_keys()}
    stored = db.keys(account.org_id)
    assert len(stored) == 30 + in_flight and not dropped_keys & set(stored)
    ns = sorted(
        r[0] for r in db.rows("SELECT (metadata->>'n')::int FROM audit_logs WHERE org_id = :o", o=account.org_id)
    )
    dropped_ns = sorted(json.loads(r)["metadata"]["n"] for e in events for r in e.records)
    assert sorted(ns + dropped_ns) == list(range(60))  # each record either stored once or reported
    client.log("after")
    assert client.flush(10) is True  # everything since the last flush arrived
    client.close()


def test_full_queue_drop_oldest_policy_keeps_the_newest_and_reports(proxy: Proxy, account: Account, db: Database):
    events, on_drop = _collect()
    client = _client(
        proxy.url, account.key, batch_size=10, max_queue_records=30, queue_policy="drop_oldest", on_drop=on_drop
    )
    proxy.hold()
    client.log("step", metadata={"n": 0})
    while client.stats().in_flight == 0:  # the first batch (one record) is taken and stuck
        time.sleep(0.005)
    started = time.perf_counter()
    for n in range(1, 100):
        client.log("step", metadata={"n": n})
    assert time.perf_counter() - started < 1.0  # never waits
    assert client.stats().dropped == {"queue_full": 69}
    proxy.release()
    assert client.flush(30) is False
    ns = sorted(
        r[0] for r in db.rows("SELECT (metadata->>'n')::int FROM audit_logs WHERE org_id = :o", o=account.org_id)
    )
    assert ns == [0, *range(70, 100)]
    dropped = sorted(json.loads(r)["metadata"]["n"] for e in events for r in e.records)
    assert dropped == list(range(1, 70))
    client.close()


def test_queue_bounded_in_bytes_too(proxy: Proxy, account: Account):
    client = _client(proxy.url, account.key, max_queue_bytes=50_000, queue_policy="drop_oldest", batch_size=1000)
    proxy.hold()
    for _ in range(100):
        client.log("big", prompt="x" * 5_000)
    stats = client.stats()
    assert stats.dropped["queue_full"] >= 90  # about ten 5 kB records fit in 50 kB
    proxy.release()
    client.close()


def test_oversize_fields_are_cut_to_the_documented_limits(server: Server, account: Account, db: Database, caplog):
    client = _client(server.url, account.key)
    big = "é" * (MAX_TEXT_BYTES // 2 + 1000)  # 2 bytes each: over 1 MB
    client.log("a" * 200, prompt=big, response="fine", metadata={"blob": "x" * (MAX_JSON_BYTES + 10)})
    assert client.flush(30) is True
    [row] = db.records(account.org_id)
    assert len(row.prompt.encode()) <= MAX_TEXT_BYTES and big.startswith(row.prompt)
    assert row.response == "fine"
    assert row.action == "a" * 128
    cut = row.metadata[TRUNCATED_KEY]
    assert cut == {"action": 200, "prompt": len(big.encode()), "metadata": MAX_JSON_BYTES + 10 + len('{"blob":""}')}
    assert client.stats().truncated == 1
    assert any("cut to the server's limits" in r.getMessage() for r in caplog.records)

    strict = _client(server.url, account.key, oversize="error")
    with pytest.raises(RecordTooLarge) as refused:
        strict.log("big", response=big)
    assert refused.value.field == "response"
    client.close()
    strict.close()


def test_a_record_the_server_refuses_is_reported_and_the_rest_arrive(server: Server, account: Account, db: Database):
    events, on_drop = _collect()
    client = _client(server.url, account.key, on_drop=on_drop, batch_size=100, flush_interval=0.5)
    for n in range(9):
        client.log("good", metadata={"n": n})
    client.log("bad", risk_level="NOT-A-LEVEL")
    client.log("bad", agent_id="agent_does_not_exist")  # refused without a per-record index: found by halving
    assert client.flush(30) is False
    assert len(db.keys(account.org_id)) == 9
    assert sorted(e.reason for e in events) == ["rejected", "rejected"]
    assert any("riskLevel" in e.detail for e in events)
    assert any("agent" in e.detail for e in events)
    assert client.stats().dropped == {"rejected": 2}
    client.close()


def test_a_wrong_key_is_reported_not_retried_forever(server: Server):
    events, on_drop = _collect()
    client = _client(server.url, "aa_live_not_a_key", on_drop=on_drop)
    client.log("x")
    assert client.flush(10) is False
    assert [e.reason for e in events] == ["unauthorized"]
    client.close()


def test_agent_names_resolve_to_their_ids(server: Server, account: Account, db: Database):
    created = account.gql("CreateAgent", {"input": {"name": "support-bot"}})["createAgent"]
    client = _client(server.url, account.key, agent="support-bot")
    client.log("one")
    client.log("two", agent="nobody-registered")
    client.log("three", agent=created["id"])
    assert client.flush(10) is True
    rows = {r.action: r for r in db.records(account.org_id)}
    assert rows["one"].agent_id == created["id"] and rows["three"].agent_id == created["id"]
    assert rows["two"].agent_id is None and rows["two"].metadata == {"agentName": "nobody-registered"}
    client.close()


def test_batch_answer_current_shape_and_plain_array_of_ids():
    assert parse_ids({"records": [{"id": "log_1"}, {"id": "log_2"}], "count": 2}) == ["log_1", "log_2"]
    assert parse_ids(["log_1", "log_2"]) == ["log_1", "log_2"]
    assert parse_ids([{"id": "log_1"}]) == ["log_1"]
    assert parse_ids({"error": "x"}) is None


@pytest.mark.parametrize("accelerated", [True, False])
def test_records_serialise_the_same_with_or_without_orjson(monkeypatch, accelerated):
    import datetime as dt
    import uuid

    from agentrail import _records

    if not accelerated:
        monkeypatch.setattr(_records, "_orjson", None)
    record = {
        "action": "x",
        "metadata": {
            "when": dt.datetime(2026, 1, 2, 3, 4, 5),
            "tags": {"b"},
            "pair": (1, 2),
            "nan": float("nan"),
            1: "int key",
            "id": uuid.UUID(int=1),
            "big": 2**70,
            "text": "héllo",
        },
    }
    assert json.loads(_records.dumps(record)) == {
        "action": "x",
        "metadata": {
            "when": "2026-01-02T03:04:05Z",
            "tags": ["b"],
            "pair": [1, 2],
            "nan": None,
            "1": "int key",
            "id": "00000000-0000-0000-0000-000000000001",
            "big": 2**70,
            "text": "héllo",
        },
    }
