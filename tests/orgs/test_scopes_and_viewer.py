"""Issue 20, items 3 and 8: the read-only VIEWER role and API key scopes (INGEST, READ, FULL), a key limited to
agents; the declarations decide (the walk over every operation is tests/api/test_permissions.py)."""

from __future__ import annotations

import sqlalchemy as sa

from support import add_user, error_code, gql, register


async def _count(runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def _key(client, account, **variables) -> tuple[str, dict]:
    created = await gql(client, "CreateApiKey", {"name": "k", **variables}, token=account.token)
    assert "errors" not in created, created
    return created["data"]["createApiKey"]["secret"], created["data"]["createApiKey"]["apiKey"]


async def test_a_viewer_reads_but_cannot_ingest_or_change(client, runtime, settings):
    owner = await register(client)
    _, viewer = await add_user(runtime, settings, owner, "viewer")
    me = await gql(client, "Me", token=viewer)
    assert me["data"]["me"]["user"]["role"] == "VIEWER"
    assert "errors" not in await gql(client, "AuditLogs", {}, token=viewer)
    refused = await gql(client, "LogEvent", {"input": {"action": "x"}}, token=viewer)
    assert error_code(refused) == "FORBIDDEN" and "owner, admin or member" in refused["errors"][0]["message"]
    assert error_code(await gql(client, "CreateAgent", {"input": {"name": "a"}}, token=viewer)) == "FORBIDDEN"
    assert error_code(await gql(client, "CreateApiKey", {"name": "k"}, token=viewer)) == "FORBIDDEN"
    rest = await client.post("/api/v1/audit-logs", json={"action": "x"}, headers={"Authorization": f"Bearer {viewer}"})
    assert rest.status_code == 403 and rest.json()["code"] == "FORBIDDEN"
    assert await _count(runtime, "audit_logs") == 0


async def test_scopes_are_checked_like_roles(client, runtime):
    owner = await register(client)
    ingest, shown = await _key(client, owner, scopes=["INGEST"])
    assert shown["scopes"] == ["INGEST"] and shown["agentIds"] is None
    read, _ = await _key(client, owner, scopes=["READ"])
    full, shown_full = await _key(client, owner)
    assert shown_full["scopes"] == ["FULL"]

    assert "errors" not in await gql(client, "LogEvent", {"input": {"action": "x"}}, api_key=ingest)
    refused = await gql(client, "AuditLogs", {}, api_key=ingest)
    assert error_code(refused) == "FORBIDDEN" and "read scope" in refused["errors"][0]["message"]
    assert error_code(await gql(client, "LogEvent", {"input": {"action": "x"}}, api_key=read)) == "FORBIDDEN"
    assert "errors" not in await gql(client, "AuditLogs", {}, api_key=read)
    assert "errors" not in await gql(client, "LogEvent", {"input": {"action": "x"}}, api_key=full)
    assert "errors" not in await gql(client, "AuditLogs", {}, api_key=full)
    otlp = await client.post(
        "/v1/traces", content=b"{}", headers={"X-API-Key": read, "Content-Type": "application/json"}
    )
    assert otlp.status_code == 403
    assert await _count(runtime, "audit_logs") == 2
    # the scopes are on the activity trail of the key's creation
    async with runtime.db.engine.connect() as conn:
        metadata = (
            (await conn.execute(sa.text("SELECT metadata FROM activity_events WHERE action = 'api_key.created'")))
            .scalars()
            .all()
        )
    assert {tuple(m["scopes"]) for m in metadata} == {("ingest",), ("read",), ("full",)}


async def test_a_key_limited_to_agents_writes_only_for_them(client, runtime):
    owner = await register(client)
    agents = []
    for name in ("mine", "other"):
        created = await gql(client, "CreateAgent", {"input": {"name": name}}, token=owner.token)
        agents.append(created["data"]["createAgent"]["id"])
    secret, shown = await _key(client, owner, scopes=["INGEST"], agentIds=[agents[0]])
    assert shown["agentIds"] == [agents[0]]

    assert "errors" not in await gql(
        client, "LogEvent", {"input": {"action": "x", "agentId": agents[0]}}, api_key=secret
    )
    for record in ({"action": "x", "agentId": agents[1]}, {"action": "x"}):
        refused = await gql(client, "LogEvent", {"input": record}, api_key=secret)
        assert error_code(refused) == "FORBIDDEN", refused
    batch = [{"action": "x", "agentId": agents[0]}, {"action": "y", "agentId": agents[1]}]
    assert error_code(await gql(client, "LogEvents", {"input": batch}, api_key=secret)) == "FORBIDDEN"
    assert await _count(runtime, "audit_logs") == 1  # nothing of the refused batch


async def test_key_creation_rejections_write_nothing(client, runtime):
    owner = await register(client)
    stranger = await register(client)
    theirs = (await gql(client, "CreateAgent", {"input": {"name": "t"}}, token=stranger.token))["data"]["createAgent"]
    before = await _count(runtime, "api_keys")
    for variables in ({"scopes": []}, {"agentIds": []}, {"agentIds": [theirs["id"]]}, {"agentIds": ["agent_nope"]}):
        result = await gql(client, "CreateApiKey", {"name": "k", **variables}, token=owner.token)
        assert error_code(result) == "BAD_USER_INPUT", (variables, result)
    assert error_code(await gql(client, "CreateApiKey", {"name": "k", "scopes": ["ADMIN"]}, token=owner.token))
    assert await _count(runtime, "api_keys") == before
