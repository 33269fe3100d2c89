"""Metrics: hourly rollups (idempotent, incremental, late records) and the `metrics` query, checked against
direct counts over the raw records, before and after rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.metrics import histogram, service
from support import create_api_key, error_code, gql, register


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hour_now() -> datetime:
    return service.floor_hour(datetime.now(UTC))


async def _log_events(client, account, events: list[dict[str, Any]]) -> list[str]:
    result = await gql(client, "LogEvents", {"input": events}, token=account.token)
    assert "errors" not in result, result
    return [r["id"] for r in result["data"]["logEvents"]]


async def _agent(client, account, name: str) -> str:
    result = await gql(client, "CreateAgent", {"input": {"name": name}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createAgent"]["id"]


async def _seed(client, account, base: datetime, n: int = 90) -> None:
    """n records over base .. base + ~4.5 h: two agents and none, two actions, every status, governance
    statuses and none, numeric, non-numeric and absent tokens, absent durations, and prompts that alert."""
    rule = await gql(
        client,
        "CreateComplianceRule",
        {"input": {"name": "codes", "kind": "PATTERN", "config": {"pattern": r"PRJ-\d{4}"}, "appliesTo": ["PROMPT"]}},
        token=account.token,
    )
    assert "errors" not in rule, rule
    agents = [await _agent(client, account, "alpha"), await _agent(client, account, "beta"), None]
    events = []
    for i in range(n):
        event: dict[str, Any] = {
            "action": ("llm_call", "tool_use")[i % 2],
            "occurredAt": _iso(base + timedelta(minutes=3 * i, seconds=7)),
            "status": ("OK", "OK", "ERROR", "OK", "BLOCKED")[i % 5],
            "prompt": "see PRJ-1234" if i % 4 == 0 else "hello",
        }
        if agents[i % 3]:
            event["agentId"] = agents[i % 3]
        if i % 7:
            event["durationMs"] = round(3 + (i * 37) % 2000 + i / 10, 1)
        if i % 3 == 0:
            event["governanceStatus"] = "approved"
        elif i % 3 == 1:
            event["governanceStatus"] = "blocked"
        if i % 4:
            event["verb"] = ("stripe:create_refund", "github:open_pr", "stripe:list_charges")[i % 3]
            event["provider"] = event["verb"].split(":")[0]
        if i % 5 in (1, 2):
            event["tenantId"] = ("ten_a", "ten_b")[i % 5 - 1]
        if i % 8 == 0:
            event["idempotent"] = True
        elif i % 8 == 1:
            event["idempotent"] = False
        if i % 6 == 0:
            event["metadata"] = {"tokens": 100 + i}
        elif i % 6 == 1:
            event["metadata"] = {"tokens": "many"}
        events.append(event)
    await _log_events(client, account, events)


_DIRECT_COLUMNS = {
    "AGENT": "a.agent_id",
    "ACTION": "a.action",
    "STATUS": "a.status",
    "GOVERNANCE_STATUS": "a.governance_status",
    "VERB": "a.verb",
    "PROVIDER": "a.provider",
    "TENANT": "a.tenant_id",
    "HOUR": "date_trunc('hour', a.occurred_at AT TIME ZONE 'UTC')",
    "DAY": "date_trunc('day', a.occurred_at AT TIME ZONE 'UTC')",
}


async def _direct(runtime, org_id: str, start: datetime, end: datetime, group_by: list[str]) -> dict:
    """The same aggregates straight from audit_logs and alerts."""
    keys = [_DIRECT_COLUMNS[g] for g in group_by] or ["1"]
    sql = f"""
        SELECT {", ".join(keys)}, count(*), count(*) FILTER (WHERE a.status = 'error'),
               count(*) FILTER (WHERE a.status = 'blocked' OR a.governance_status = 'blocked'),
               count(*) FILTER (WHERE a.idempotent),
               coalesce(sum((SELECT count(*) FROM alerts al WHERE al.audit_log_id = a.id)), 0),
               coalesce(sum(CASE WHEN jsonb_typeof(a.metadata->'tokens') = 'number'
                                 THEN (a.metadata->>'tokens')::float8 END), 0),
               array_agg(a.duration_ms) FILTER (WHERE a.duration_ms IS NOT NULL)
        FROM audit_logs a WHERE a.org_id = :org AND a.occurred_at >= :start AND a.occurred_at < :end
        GROUP BY {", ".join(keys)}
    """
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(sa.text(sql), {"org": org_id, "start": start, "end": end})).all()
    out = {}
    for row in rows:
        key = tuple(row[: len(keys)]) if group_by else ()
        out[key] = row[len(keys) :]
    return out


def _key(bucket: dict, group_by: list[str]) -> tuple:
    dims = bucket["dimensions"]
    values: dict[str, Any] = {
        "AGENT": dims["agentId"],
        "ACTION": dims["action"],
        "STATUS": dims["status"].lower() if dims["status"] else None,
        "GOVERNANCE_STATUS": dims["governanceStatus"],
        "VERB": dims["verb"],
        "PROVIDER": dims["provider"],
        "TENANT": dims["tenantId"],
        "HOUR": datetime.fromisoformat(bucket["start"].replace("Z", "+00:00")).replace(tzinfo=None),
        "DAY": datetime.fromisoformat(bucket["start"].replace("Z", "+00:00")).replace(tzinfo=None),
    }
    return tuple(values[g] for g in group_by)


def _exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]


async def _metrics(client, account, start: datetime, end: datetime | None, group_by: list[str], **kw) -> list[dict]:
    variables: dict[str, Any] = {"from": _iso(start), "groupBy": group_by, **kw}
    if end is not None:
        variables["to"] = _iso(end)
    result = await gql(client, "Metrics", variables, token=account.token)
    assert "errors" not in result, result
    return result["data"]["metrics"]


async def _assert_matches_direct(client, runtime, account, start, end, group_by) -> list[dict]:
    buckets = await _metrics(client, account, start, end, group_by)
    direct = await _direct(runtime, account.org_id, start, end, group_by)
    got = {_key(b, group_by): b for b in buckets}
    assert set(got) == set(direct), (group_by, sorted(map(str, got)), sorted(map(str, direct)))
    for key, (count, errors, blocked, idempotent, alerts, tokens, durations) in direct.items():
        b = got[key]
        assert (b["count"], b["errors"], b["blocked"], b["alerts"]) == (count, errors, blocked, alerts), (group_by, key)
        assert b["idempotent"] == idempotent and abs(b["idempotencyHitRate"] - idempotent / count) < 1e-9
        assert abs(b["governanceBlockRate"] - blocked / count) < 1e-9
        assert abs(b["tokens"] - tokens) < 1e-6
        if not durations:
            assert b["durationP50"] is None and b["durationP95"] is None
            continue
        for q, field in ((0.5, "durationP50"), (0.95, "durationP95")):
            exact = _exact_percentile(durations, q)
            # the histogram's buckets are 2^(1/4) wide: the estimate lies within one bucket of the truth
            assert exact / 1.2 - 1e-9 <= b[field] <= exact * 1.2 + 1e-9, (group_by, key, field, b[field], exact)
            assert min(durations) <= b[field] <= max(durations)
    return buckets


GROUPINGS = [
    [],
    ["AGENT"],
    ["ACTION", "STATUS"],
    ["GOVERNANCE_STATUS", "HOUR"],
    ["DAY", "AGENT", "ACTION", "STATUS", "GOVERNANCE_STATUS"],
    ["HOUR", "AGENT", "ACTION", "STATUS", "GOVERNANCE_STATUS"],
]
# seed 004's dimensions (a test of their own: each test's queries stay within one user's cost budget)
GROUPINGS_004 = [
    ["VERB"],
    ["PROVIDER", "TENANT"],
    ["DAY", "VERB", "PROVIDER", "TENANT", "GOVERNANCE_STATUS"],
    ["HOUR", "AGENT", "VERB", "TENANT"],
]


async def _rollup_in_worker(runtime, org_id: str) -> int:
    from workers.settings import run_worker

    job = await runtime.queue.enqueue_job("rollup_org_metrics", org_id)
    await run_worker(runtime, burst=True)
    return await job.result(timeout=30)


_ROLLUP_KEY = "org_id, hour, agent_id, action, status, governance_status, verb, provider, tenant_id"


async def _rollup_rows(runtime) -> list[tuple]:
    async with runtime.db.engine.connect() as conn:
        return [
            tuple(r)
            for r in (await conn.execute(sa.text(f"SELECT * FROM metric_rollups ORDER BY {_ROLLUP_KEY}"))).all()
        ]


async def _seeded_account(client):
    """A new account with six hours of seeded records; the window around them, and one with ragged edges."""
    account = await register(client)
    base = _hour_now() - timedelta(hours=6)
    await _seed(client, account, base)
    window = (base - timedelta(hours=1), _hour_now() + timedelta(hours=1))
    ragged = (base + timedelta(minutes=37), base + timedelta(hours=3, minutes=11))
    return account, window, ragged


async def test_metrics_equal_direct_counts_before_and_after_rollup(client, runtime):
    account, (start, end), (ragged_start, ragged_end) = await _seeded_account(client)

    before = {}
    for group_by in GROUPINGS:
        before[str(group_by)] = await _assert_matches_direct(client, runtime, account, start, end, group_by)
        await _assert_matches_direct(client, runtime, account, ragged_start, ragged_end, group_by)

    hours = await _rollup_in_worker(runtime, account.org_id)
    assert hours == 5  # the seeded records span five complete hours
    for group_by in GROUPINGS:
        after = await _assert_matches_direct(client, runtime, account, start, end, group_by)
        assert after == before[str(group_by)]  # rollups and raw records give identical answers
        await _assert_matches_direct(client, runtime, account, ragged_start, ragged_end, group_by)

    # a filter applies to both parts
    filtered = await _metrics(
        client, account, start, end, ["ACTION"], filter={"status": ["ERROR", "BLOCKED"], "action": ["tool_use"]}
    )
    assert [(b["dimensions"]["action"], b["count"]) for b in filtered] == [("tool_use", 18)]
    # blocked counts the governance decision too: errors + BLOCKED-status + governance-blocked OK records
    assert filtered[0]["errors"] + filtered[0]["blocked"] >= 18
    # "" selects records without a governance status, from rollups and raw records alike (ragged edges)
    for window in ((start, end), (ragged_start, ragged_end)):
        none = await _metrics(client, account, *window, [], filter={"governanceStatus": [""]})
        direct = await _direct(runtime, account.org_id, *window, ["GOVERNANCE_STATUS"])
        assert [b["count"] for b in none] == [direct[(None,)][0]]


async def test_verb_provider_and_tenant_dimensions_and_filters_equal_direct_counts(client, runtime):
    account, (start, end), (ragged_start, ragged_end) = await _seeded_account(client)
    for rolled in (False, True):
        if rolled:
            assert await _rollup_in_worker(runtime, account.org_id) == 5
        for group_by in GROUPINGS_004:
            await _assert_matches_direct(client, runtime, account, start, end, group_by)
            await _assert_matches_direct(client, runtime, account, ragged_start, ragged_end, group_by)
        # tenantId, verb and provider filter both parts too ("" again: records without one)
        for window in ((start, end), (ragged_start, ragged_end)):
            for name, dimension, value in (("tenantId", "TENANT", "ten_a"), ("verb", "VERB", "github:open_pr"),
                                           ("provider", "PROVIDER", "")):  # fmt: skip
                only = await _metrics(client, account, *window, [], filter={name: [value]})
                direct = await _direct(runtime, account.org_id, *window, [dimension])
                assert [b["count"] for b in only] == [direct[(value or None,)][0]], name


async def test_rollup_is_idempotent(client, runtime):
    account = await register(client)
    base = _hour_now() - timedelta(hours=6)
    await _seed(client, account, base, n=60)
    first = await service.rollup_organization(runtime.db, account.org_id)
    assert first.hours == 3 and first.rows > 0
    rows = await _rollup_rows(runtime)

    again = await service.rollup_organization(runtime.db, account.org_id)
    assert again.hours == 0  # nothing new: nothing recomputed
    assert await _rollup_rows(runtime) == rows

    # forget the watermark: every hour is recomputed from the raw records, to the same rows
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM metric_rollup_state"))
    recomputed = await service.rollup_organization(runtime.db, account.org_id)
    assert recomputed.hours == 3
    assert await _rollup_rows(runtime) == rows
    assert sum(r[6] for r in rows) == 60  # count column

    # the cron entry point finds nothing left to do
    assert await service.orgs_to_roll_up(runtime.db) == []


async def test_live_tail_counts_the_newest_records(client, runtime):
    account = await register(client)
    now = datetime.now(UTC)
    await _log_events(client, account, [{"action": "old", "occurredAt": _iso(now - timedelta(hours=3))}])
    await service.rollup_organization(runtime.db, account.org_id)
    # just now: not rolled up (the hour is not complete), still counted at once
    await _log_events(client, account, [{"action": "new", "durationMs": 12.5}, {"action": "new", "status": "ERROR"}])
    buckets = await _metrics(client, account, now - timedelta(days=1), None, ["ACTION"])
    assert [(b["dimensions"]["action"], b["count"], b["errors"]) for b in buckets] == [("new", 2, 1), ("old", 1, 0)]
    assert buckets[0]["durationP50"] == 12.5
    result = await service.rollup_organization(runtime.db, account.org_id)
    assert result.hours == 0 and result.rolled_until == _hour_now()
    assert await _metrics(client, account, now - timedelta(days=1), None, ["ACTION"]) == buckets


async def test_late_record_for_an_old_hour_is_picked_up(client, runtime):
    account = await register(client)
    old_hour = _hour_now() - timedelta(hours=30)
    await _log_events(client, account, [{"action": "a", "occurredAt": _iso(old_hour + timedelta(minutes=5))}])
    assert (await service.rollup_organization(runtime.db, account.org_id)).hours == 1
    start = old_hour - timedelta(days=1)

    # arrives after its hour was rolled up: counted at once (from the raw records), then rolled into its hour
    await _log_events(
        client, account, [{"action": "a", "occurredAt": _iso(old_hour + timedelta(minutes=50)), "status": "BLOCKED"}]
    )
    expected = [{"count": 2, "blocked": 1}]
    got = await _metrics(client, account, start, None, ["HOUR"])
    assert [{"count": b["count"], "blocked": b["blocked"]} for b in got] == expected
    assert (await service.rollup_organization(runtime.db, account.org_id)).hours == 1
    assert await _metrics(client, account, start, None, ["HOUR"]) == got
    rows = await _rollup_rows(runtime)
    assert sorted((r[1], r[4], r[6], r[8]) for r in rows) == [(old_hour, "blocked", 1, 1), (old_hour, "ok", 1, 0)]


async def test_tenant_isolation(client, runtime):
    a = await register(client, org="A")
    b = await register(client, org="B")
    base = _hour_now() - timedelta(hours=4)
    await _log_events(client, a, [{"action": "x", "occurredAt": _iso(base)}] * 3)
    await _log_events(client, b, [{"action": "y", "occurredAt": _iso(base)}])
    start = base - timedelta(hours=1)
    for _ in range(2):  # raw records, then rollups
        got_a = await _metrics(client, a, start, None, ["ACTION"])
        got_b = await _metrics(client, b, start, None, ["ACTION"])
        assert [(x["dimensions"]["action"], x["count"]) for x in got_a] == [("x", 3)]
        assert [(x["dimensions"]["action"], x["count"]) for x in got_b] == [("y", 1)]
        results = await service.rollup_all(runtime.db)
        assert sorted(r.org_id for r in results) in ([], sorted([a.org_id, b.org_id]))


async def test_api_keys_may_read_and_anonymous_may_not(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    await _log_events(client, account, [{"action": "x"}])
    start = _iso(datetime.now(UTC) - timedelta(hours=1))
    result = await gql(client, "Metrics", {"from": start}, api_key=secret)
    assert [b["count"] for b in result["data"]["metrics"]] == [1]
    assert result["data"]["metrics"][0]["start"].startswith(start[:19])
    assert error_code(await gql(client, "Metrics", {"from": start})) == "UNAUTHENTICATED"


async def test_bad_ranges_are_rejected(client, runtime):
    account = await register(client)
    t = datetime(2026, 11, 1, tzinfo=UTC)
    cases = [
        {"from": _iso(t), "to": _iso(t)},
        {"from": _iso(t), "to": _iso(t - timedelta(seconds=1))},
        {"from": _iso(t), "to": _iso(t + timedelta(days=400, seconds=1))},
        {"from": _iso(t), "to": _iso(t + timedelta(days=1)), "groupBy": ["HOUR", "DAY"]},
        {"from": _iso(datetime.now(UTC) + timedelta(hours=2))},  # `to` defaults to now
    ]
    for variables in cases:
        result = await gql(client, "Metrics", variables, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT", (variables, result)
    ok = await gql(client, "Metrics", {"from": _iso(t), "to": _iso(t + timedelta(days=400))}, token=account.token)
    assert ok["data"]["metrics"] == []
    assert error_code(await gql(client, "Metrics", {"from": "yesterday"}, token=account.token)) == "BAD_USER_INPUT"


async def test_histogram_buckets_and_percentiles(runtime):
    values = [0, 0.5, 1, 1.18, 1.19, 2, 3600_000, 1e12]
    assert [histogram.bucket_of(v) for v in values] == [0, 0, 1, 1, 2, 5, 88, 97]
    probes = values + [1.5**k for k in range(-3, 60)] + [2 ** (k / 4) + d for k in range(97) for d in (-1e-9, 1e-9)]
    async with runtime.db.engine.connect() as conn:
        sql = (
            f"SELECT {histogram.bucket_sql('v')} "
            "FROM unnest(CAST(:values AS float8[])) WITH ORDINALITY u(v, i) ORDER BY i"
        )
        in_sql = (await conn.execute(sa.text(sql), {"values": probes})).scalars().all()
    assert in_sql == [histogram.bucket_of(v) for v in probes]  # SQL and Python agree, also at the edges
    assert histogram.percentile([0] * histogram.BUCKETS, 0.5) is None
    counts = [0] * histogram.BUCKETS
    for v in (10.0, 20.0, 30.0, 40.0):
        counts[histogram.bucket_of(v)] += 1
    p50 = histogram.percentile(counts, 0.5, minimum=10.0, maximum=40.0)
    assert 20.0 / 1.2 <= p50 <= 20.0 * 1.2
    assert histogram.percentile(counts, 0.99, minimum=10.0, maximum=40.0) <= 40.0


async def test_cron_job_rolls_up_every_organisation_in_a_real_worker(client, runtime):
    from workers.settings import CRON_JOBS, run_worker

    assert any(c.name == "cron:rollup_metrics" for c in CRON_JOBS)
    a = await register(client, org="A")
    b = await register(client, org="B")
    old = _hour_now() - timedelta(hours=2)
    await _log_events(client, a, [{"action": "x", "occurredAt": _iso(old)}])
    await _log_events(client, b, [{"action": "y", "occurredAt": _iso(old - timedelta(hours=1))}])
    job = await runtime.queue.enqueue_job("rollup_metrics")
    await run_worker(runtime, burst=True)
    assert await job.result(timeout=30) == 2  # one hour in each organisation
    assert sorted((r[0], r[3]) for r in await _rollup_rows(runtime)) == sorted([(a.org_id, "x"), (b.org_id, "y")])


async def test_records_blocked_by_a_rule_count_as_blocked(client, runtime):
    """Issue 17.12: records a BLOCK rule stored with governanceStatus "blocked" (status OK) count in `blocked`."""
    account = await register(client)
    rule = {"name": "stop", "kind": "KEYWORDS", "config": {"keywords": ["halt"]}, "action": "BLOCK"}
    assert "errors" not in await gql(client, "CreateComplianceRule", {"input": rule}, token=account.token)
    events = [{"action": "tool_use", "prompt": "halt now"}, {"action": "tool_use", "prompt": "halt"}, {"action": "x"}]
    await _log_events(client, account, events)
    [bucket] = await _metrics(client, account, _hour_now() - timedelta(hours=1), None, [])
    assert (bucket["count"], bucket["blocked"]) == (3, 2)
    assert abs(bucket["governanceBlockRate"] - 2 / 3) < 1e-9
    await _rollup_in_worker(runtime, account.org_id)
    [bucket] = await _metrics(client, account, _hour_now() - timedelta(hours=1), None, [])
    assert bucket["blocked"] == 2
