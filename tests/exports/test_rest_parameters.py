"""REST query parameters (app/rest/params.py): enum values match in any case, and whatever a route does not
accept (unknown parameters, unknown values, malformed times and booleans) is 400 naming what it accepts, on
every REST route."""

from __future__ import annotations

import json

import pytest

from support import create_api_key, gql, register

EXPORT = "/api/v1/audit-logs/export"


async def _log(client, account, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]["id"]


async def _exported_ids(client, secret, params) -> list[str]:
    response = await client.get(EXPORT, params={"format": "json", **params}, headers={"X-API-Key": secret})
    assert response.status_code == 200, response.text
    return sorted(record["id"] for record in json.loads(response.text)["records"])


async def test_enum_values_match_in_any_case(client):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    failed = await _log(client, account, status="ERROR", riskLevel="HIGH", governanceStatus="blocked")
    fine = await _log(client, account, status="OK", riskLevel="LOW")
    for params, expected in (
        ({"status": "ERROR"}, [failed]),
        ({"status": "error"}, [failed]),
        ({"status": "Ok"}, [fine]),
        ({"status": "ok,ERROR"}, sorted([failed, fine])),
        ({"riskLevel": "high"}, [failed]),
        ({"riskLevel": "HIGH"}, [failed]),
        ({"riskLevel": "Low"}, [fine]),
        ({"governanceStatus": "BLOCKED"}, [failed]),
        ({"format": "JSON", "hasAlerts": "FALSE"}, sorted([failed, fine])),
    ):
        assert await _exported_ids(client, secret, params) == expected, params


@pytest.mark.parametrize(
    ("params", "named", "accepted"),
    [
        ({"status": "finished"}, "status", "OK, ERROR, BLOCKED"),
        ({"riskLevel": "EXTREME"}, "riskLevel", "LOW, MEDIUM, HIGH, CRITICAL"),
        ({"status": "ok,finished"}, "status", "OK, ERROR, BLOCKED"),
        ({"entity_type": "user"}, "entity_type", "riskLevel"),
        ({"from_date": "2025-01-01"}, "from_date", "from"),
        ({"format": "xml"}, "format", "csv, json"),
        ({"from": "yesterday"}, "from", "ISO 8601"),
        ({"hasAlerts": "maybe"}, "hasAlerts", "true or false"),
        ({"governanceStatus": "not a decision!"}, "governanceStatus", "approved"),
    ],
)
async def test_what_an_export_does_not_accept_is_400_naming_what_it_does(client, params, named, accepted):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    await _log(client, account)
    response = await client.get(EXPORT, params=params, headers={"X-API-Key": secret})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "BAD_USER_INPUT" and body["status"] == 400
    assert named in body["error"] and accepted in body["error"], body


async def test_activity_export_parameters(client):
    account = await register(client)
    await create_api_key(client, account)  # an activity event: api_key created
    headers = {"Authorization": f"Bearer {account.token}"}
    response = await client.get(
        "/api/v1/activity/export", params={"format": "json", "targetType": "API_KEY"}, headers=headers
    )
    assert response.status_code == 200, response.text
    events = json.loads(response.text)["events"] if "events" in response.text else json.loads(response.text)
    assert events
    refused = await client.get("/api/v1/activity/export", params={"entity_type": "user"}, headers=headers)
    assert refused.status_code == 400 and "targetType" in refused.json()["error"]


async def test_every_rest_route_refuses_unknown_parameters(client, app, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    before = await _count_records(runtime)
    checked = []
    for route in app.routes:
        path = getattr(route, "path", "")
        methods = sorted((getattr(route, "methods", None) or set()) - {"HEAD"})
        if path == "/graphql" or not methods:
            continue
        url = path.replace("{job_id}", "exp_x").replace("{report_id}", "rep_x")
        for method in methods:
            for headers in ({"Authorization": f"Bearer {account.token}"}, {"X-API-Key": secret}):
                response = await client.request(method, url, params={"bogus": "1"}, headers=headers, content=b"{}")
                if response.status_code not in (401, 403):  # the other credential kind may call it
                    break
            assert response.status_code == 400, (method, path, response.status_code, response.text[:200])
            if path.startswith("/v1/"):  # OTLP answers in its own format
                continue
            body = response.json()
            assert body["code"] == "BAD_USER_INPUT" and "bogus" in body["error"], (path, body)
            checked.append(f"{method} {path}")
    assert "GET /api/v1/audit-logs/export" in checked and "POST /api/v1/audit-logs" in checked
    assert "GET /healthz" in checked
    assert await _count_records(runtime) == before  # refused before anything was written


async def _count_records(runtime) -> int:
    import sqlalchemy as sa

    async with runtime.db.system_session(autocommit=True) as session:
        return int((await session.execute(sa.text("SELECT count(*) FROM audit_logs"))).scalar_one())


async def test_api_key_listing_takes_include_revoked_in_any_case(client):
    account = await register(client)
    _, key_id = await create_api_key(client, account)
    revoked = await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)
    assert "errors" not in revoked, revoked
    await create_api_key(client, account, name="live")
    headers = {"Authorization": f"Bearer {account.token}"}
    for value, count in (("false", 1), ("FALSE", 1), ("true", 2), (None, 2)):
        params = {"includeRevoked": value} if value else {}
        response = await client.get("/api/v1/auth/api-keys", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert len(response.json()["apiKeys"]) == count, value
    refused = await client.get("/api/v1/auth/api-keys", params={"includeRevoked": "maybe"}, headers=headers)
    assert refused.status_code == 400 and "true or false" in refused.json()["error"]
