"""Numbers in records: one answer on every ingest path, and whatever ingest accepts, verification accepts.

The rule (app/db.py `json_value_problem`): a number is kept exactly when jsonb gives it back as the same value,
that is within the 64-bit range (-2^63 to 2^64-1); beyond it the record is refused with 400 / BAD_USER_INPUT,
on REST, GraphQL and OTLP alike, naming the field.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audit import sealing
from support import create_api_key, error_code, gql, register

BIG = 18446744073709551617  # 2^64 + 1: the reproduction
LOG_EVENT = "mutation($i: AuditLogInput!) { logEvent(input: $i) { id metadata } }"


async def _post_rest(client, key: str, metadata_text: str):
    body = '{"action": "n", "metadata": ' + metadata_text + "}"
    return await client.post(
        "/api/v1/audit-logs", content=body.encode(), headers={"X-API-Key": key, "content-type": "application/json"}
    )


async def _post_graphql(client, key: str, metadata_text: str):
    body = '{"query": ' + json.dumps(LOG_EVENT) + ', "variables": {"i": {"action": "n", "metadata": '
    body += metadata_text + "}}}"
    return await client.post(
        "/graphql", content=body.encode(), headers={"X-API-Key": key, "content-type": "application/json"}
    )


async def _verified(client, account) -> dict:
    result = await gql(client, "VerifyAuditTrail", {}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["verifyAuditTrail"]


async def test_integers_beyond_64_bits_get_the_same_answer_on_every_path(client, runtime):
    account = await register(client)
    key, _ = await create_api_key(client, account)
    for text in (str(BIG), str(-(2**63) - 1), "1e300", "1e19", "-1e19", "123456789012345678901234567890"):
        rest = await _post_rest(client, key, '{"n": ' + text + "}")
        assert rest.status_code == 400, (text, rest.text)
        assert rest.json()["code"] == "BAD_USER_INPUT" and "metadata" in rest.json()["error"]
        graphql = await _post_graphql(client, key, '{"n": ' + text + "}")
        assert error_code(graphql.json()) == "BAD_USER_INPUT", (text, graphql.text)
        assert "metadata" in graphql.json()["errors"][0]["message"]
    literal = await gql(
        client, 'mutation { logEvent(input: {action: "n", metadata: {n: ' + str(BIG) + "}}) { id } }", api_key=key
    )
    assert error_code(literal) == "BAD_USER_INPUT", literal
    # OTLP: a double attribute beyond the range (an int64 attribute cannot be)
    span = {
        "traceId": "0" * 31 + "1",
        "spanId": "0" * 15 + "1",
        "name": "big",
        "startTimeUnixNano": "1764000000000000000",
        "attributes": [{"key": "n", "value": {"doubleValue": 1e300}}],
    }
    otlp = await client.post(
        "/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}, headers={"X-API-Key": key}
    )
    assert otlp.status_code == 400 and "metadata" in otlp.json()["message"], otlp.text
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM audit_logs"))).scalar_one() == 0

    # the edges of the range are kept exactly, answered exactly and verify
    for text, value in (("18446744073709551615", 2**64 - 1), ("-9223372036854775808", -(2**63)), ("1e18", 1e18)):
        rest = await _post_rest(client, key, '{"n": ' + text + "}")
        assert rest.status_code == 201, rest.text
        assert rest.json()["metadata"]["n"] == value
        graphql = await _post_graphql(client, key, '{"n": ' + text + "}")
        assert graphql.json()["data"]["logEvent"]["metadata"]["n"] == value, graphql.text
    await sealing.seal_all(runtime.db, runtime.signer)
    assert (await _verified(client, account))["ok"] is True


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


async def test_whatever_ingest_accepts_verification_accepts(client, runtime):
    account = await register(client)
    key, _ = await create_api_key(client, account)
    outcomes = {"accepted": 0, "refused": 0}

    # hypothesis drives synchronous tests: it draws the examples here, and they are sent below on this event loop
    examples: list[tuple[object, bool]] = []

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(value=json_values, graphql=st.booleans())
    def draw(value, graphql):
        examples.append((value, graphql))

    draw()
    for value, graphql in examples:
        text = json.dumps({"v": value})
        response = await (_post_graphql if graphql else _post_rest)(client, key, text)
        if graphql:
            body = response.json()
            accepted = "errors" not in body
            assert accepted or error_code(body) == "BAD_USER_INPUT", response.text
        else:
            accepted = response.status_code == 201
            assert accepted or (response.status_code == 400 and response.json()["code"] == "BAD_USER_INPUT"), (
                response.text
            )
        outcomes["accepted" if accepted else "refused"] += 1
    assert outcomes["accepted"] > 0
    await sealing.seal_all(runtime.db, runtime.signer)
    verification = await _verified(client, account)
    assert verification["ok"] is True, verification
    assert verification["recordsChecked"] == outcomes["accepted"]
