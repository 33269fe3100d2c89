"""GraphQL over HTTP conformance: graphql-http's own audit suite (`serverAudits`, the npm package, pinned) run
against the app on a real uvicorn. Every audit must pass: a failure or a warning (a SHOULD) fails the test."""

from __future__ import annotations

import asyncio
import json

from npm_tools import npm_packages, run_node

from support import create_api_key, register

GRAPHQL_HTTP_VERSION = "1.23.1"

AUDIT_SCRIPT = r"""
const { serverAudits } = require('graphql-http');
(async () => {
  const results = [];
  for (const audit of serverAudits({ url: process.argv[2] })) {
    const result = await audit.fn();
    results.push({ id: result.id, name: result.name, status: result.status, reason: result.reason || null });
  }
  process.stdout.write(JSON.stringify(results));
})().catch((error) => { console.error(error); process.exit(2); });
"""


async def test_graphql_http_audits_all_pass(live_server):
    folder = await asyncio.to_thread(npm_packages, {"graphql-http": GRAPHQL_HTTP_VERSION, "graphql": "16.15.0"})
    done = await asyncio.to_thread(run_node, folder, AUDIT_SCRIPT, f"http://{live_server}/graphql")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("ok", "warn", "error")}
    print(f"\ngraphql-http {GRAPHQL_HTTP_VERSION} serverAudits: {len(results)} audits, {counts}")
    failing = [f"{r['status']} {r['id']} {r['name']}: {r['reason']}" for r in results if r["status"] != "ok"]
    for line in failing:
        print(" ", line)
    assert len(results) > 50
    assert not failing, "\n".join(failing)


QUERY = {"query": "{ __typename }"}


async def test_graphql_response_json_is_negotiated(client):
    for accept, media in (
        ("application/graphql-response+json", "application/graphql-response+json"),
        ("application/graphql-response+json, application/json;q=0.9", "application/graphql-response+json"),
        ("application/json, application/graphql-response+json;q=0.5", "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (None, "application/json"),
    ):
        headers = {"accept": accept} if accept else {}
        response = await client.post("/graphql", json=QUERY, headers=headers)
        assert response.status_code == 200, accept
        assert response.headers["content-type"].startswith(media), accept
        assert response.json() == {"data": {"__typename": "Query"}}


async def test_request_errors_are_4xx_without_data_under_graphql_response_json(client):
    accept = {"accept": "application/graphql-response+json"}
    for body in (
        {"query": "{"},  # does not parse
        {"query": "{ noSuchField }"},  # does not validate
        {"query": "query ($n: Int!) { agents(first: $n) { totalCount } }", "variables": {"n": "x"}},  # coercion
    ):
        response = await client.post("/graphql", json=body, headers=accept)
        assert response.status_code == 400, body
        assert response.headers["content-type"].startswith("application/graphql-response+json")
        result = response.json()
        assert "data" not in result and result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        # the same errors under application/json: 200 (legacy clients), and no data entry either
        legacy = await client.post("/graphql", json=body)
        assert legacy.status_code == 200 and "data" not in legacy.json() and legacy.json()["errors"]


async def test_field_errors_keep_data_and_200(client):
    # not signed in: the root field fails during execution, so data is there (null) and the status is 200
    response = await client.post(
        "/graphql", json={"query": "{ me { kind } }"}, headers={"accept": "application/graphql-response+json"}
    )
    assert response.status_code == 200
    result = response.json()
    assert "data" in result and result["errors"][0]["path"] == ["me"]


async def test_unsupported_content_type_is_415_and_unacceptable_accept_is_406(client):
    for content_type in ("text/plain", "application/graphql", "application/x-www-form-urlencoded"):
        response = await client.post(
            "/graphql", content=b'{"query": "{ __typename }"}', headers={"content-type": content_type}
        )
        assert response.status_code == 415, content_type
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    for accept in ("text/xml", "application/xml, text/csv", "application/json;q=0"):
        response = await client.post("/graphql", json=QUERY, headers={"accept": accept})
        assert response.status_code == 406, accept
        assert "application/graphql-response+json" in response.json()["errors"][0]["message"]


async def test_media_types_match_in_any_case(client):
    # RFC 9110 8.3.1: the type and subtype are case-insensitive
    for content_type in ("APPLICATION/JSON", "Application/Json; charset=UTF-8"):
        response = await client.post(
            "/graphql", content=b'{"query": "{ __typename }"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, content_type
        assert response.json()["data"] == {"__typename": "Query"}
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    response = await client.post(
        "/api/v1/audit-logs",
        content=b'{"action": "llm_call"}',
        headers={"content-type": "APPLICATION/JSON", "x-api-key": secret},
    )
    assert response.status_code == 201, response.text


async def test_mutation_over_get_is_405(client):
    response = await client.get(
        "/graphql", params={"query": 'mutation { login(email: "a@b.c", password: "x") { token } }'}
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    query = await client.get("/graphql", params={"query": "{ __typename }"}, headers={"accept": "application/json"})
    assert query.status_code == 200 and query.json() == {"data": {"__typename": "Query"}}
