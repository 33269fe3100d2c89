"""occurredAt outside a sane window is refused on every ingest path, and a record that got in anyway (a legacy
row at -infinity) disturbs neither its own reads nor any other organisation's sealing, rollups or indexing."""

from __future__ import annotations

import sqlalchemy as sa

from app.audit import sealing, search
from app.metrics import service as metrics
from app.runtime.telemetry import REGISTRY
from support import create_api_key, error_code, gql, register

OUT_OF_WINDOW = ["0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"]


async def _count(runtime) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM audit_logs"))).scalar_one())


async def test_occurred_at_outside_the_window_is_refused_naming_the_field(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    for value in OUT_OF_WINDOW:
        rest = await client.post(
            "/api/v1/audit-logs", json={"action": "a", "occurredAt": value}, headers={"X-API-Key": secret}
        )
        assert rest.status_code == 400, (value, rest.text)
        assert rest.json()["code"] == "BAD_USER_INPUT" and "occurredAt" in rest.json()["error"]
        batch = await client.post(
            "/api/v1/audit-logs/batch", json=[{"action": "a", "occurredAt": value}], headers={"X-API-Key": secret}
        )
        assert batch.status_code == 400 and "occurredAt" in batch.json()["error"]
        graphql = await gql(client, "LogEvent", {"input": {"action": "a", "occurredAt": value}}, api_key=secret)
        assert error_code(graphql) == "BAD_USER_INPUT" and "occurredAt" in graphql["errors"][0]["message"]
    # OTLP: a span that starts in 1970 (start_time_unix_nano = 1) is refused naming the field
    span = {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "name": "old", "startTimeUnixNano": "1"}
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    otlp = await client.post("/v1/traces", json=body, headers={"X-API-Key": secret})
    assert otlp.status_code == 400, otlp.text
    assert "occurredAt" in otlp.json()["message"]
    assert await _count(runtime) == 0
    # the edges of the window are fine
    ok = await gql(client, "LogEvent", {"input": {"action": "a", "occurredAt": "2000-01-01T00:00:00Z"}}, api_key=secret)
    assert "errors" not in ok, ok


async def _poison(runtime, org_id: str) -> str:
    """A copy of the organisation's record at occurred_at -infinity, as an earlier version stored for
    0001-01-01 (written with SQL: the API refuses it now)."""
    async with runtime.db.engine.begin() as conn:
        columns = [
            c
            for c in (
                await conn.execute(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_logs' "
                        "AND column_name NOT IN ('id', 'seq', 'occurred_at', 'chain_index') ORDER BY ordinal_position"
                    )
                )
            ).scalars()
        ]
        names = ", ".join(columns)
        await conn.execute(
            sa.text(
                f"INSERT INTO audit_logs (id, occurred_at, chain_index, {names}) "
                "SELECT 'log_poisoned', '-infinity', "
                "(SELECT max(chain_index) + 1 FROM audit_logs WHERE org_id = :org), "
                f"{names} FROM audit_logs WHERE org_id = :org LIMIT 1"
            ),
            {"org": org_id},
        )
    return "log_poisoned"


def _failures(job: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "agentrail_job_organization_failures":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total") and s.labels["job"] == job)
    return total


async def test_a_poisoned_organisation_does_not_stop_the_others(client, runtime):
    accounts = [await register(client, org=name) for name in ("First", "Poisoned", "Last")]
    first, poisoned, last = accounts
    for account in accounts:
        result = await gql(client, "LogEvents", {"input": [{"action": "a"}, {"action": "b"}]}, token=account.token)
        assert "errors" not in result, result
    log_id = await _poison(runtime, poisoned.org_id)

    # reading the legacy row is not INTERNAL
    read = await gql(client, "AuditLog", {"id": log_id}, token=poisoned.token)
    assert "errors" not in read, read
    assert read["data"]["auditLog"]["occurredAt"].startswith("0001-01-01")

    failed_before = {job: _failures(job) for job in ("seal_audit_trail", "rollup_metrics", "sweep_audit_search")}
    await sealing.seal_all(runtime.db, runtime.signer)
    results = await metrics.rollup_all(runtime.db)
    await search.sweep(runtime.db, lag_seconds=0)

    async with runtime.db.engine.connect() as conn:
        sealed = dict(
            (await conn.execute(sa.text("SELECT org_id, sum(record_count) FROM audit_digests GROUP BY 1"))).all()
        )
        rolled = set((await conn.execute(sa.text("SELECT org_id FROM metric_rollup_state"))).scalars())
    # the healthy organisations on either side are processed whatever happens to the poisoned one
    assert sealed[first.org_id] == 2 and sealed[last.org_id] == 2
    assert {first.org_id, last.org_id} <= rolled
    assert {first.org_id, last.org_id} <= {r.org_id for r in results}
    # the poisoned one is either processed too, or its failure is counted (and retried next run)
    for job, processed in (
        ("seal_audit_trail", poisoned.org_id in sealed),
        ("rollup_metrics", poisoned.org_id in rolled),
    ):
        assert processed or _failures(job) > failed_before[job], job
    # and the healthy ones still verify
    for account in (first, last):
        verified = await gql(client, "VerifyAuditTrail", {}, token=account.token)
        assert verified["data"]["verifyAuditTrail"]["ok"] is True, verified


async def test_a_failing_organisation_is_logged_counted_and_skipped(runtime, monkeypatch):
    """The isolation itself, with an organisation whose work raises."""
    from app.runtime.isolation import each_organization

    async def work(org_id: str) -> str:
        if org_id == "org_b":
            raise RuntimeError("boom")
        return org_id

    before = _failures("test_job")
    assert await each_organization("test_job", ["org_a", "org_b", "org_c"], work) == ["org_a", "org_c"]
    assert _failures("test_job") == before + 1
    metrics_text = REGISTRY.get_sample_value(
        "agentrail_job_organization_failures_total", {"job": "test_job", "reason": "RuntimeError"}
    )
    assert metrics_text == before + 1
