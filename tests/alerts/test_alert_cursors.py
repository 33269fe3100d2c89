"""Alert cursors are opaque per organisation: they carry nothing of the global sequence (whose steps would tell
how many alerts other tenants raise), and another organisation's cursor is refused."""

from __future__ import annotations

import base64
import json

from support import error_code, gql, register


async def _alerting(client, account, n: int) -> None:
    rule = await gql(
        client,
        "CreateComplianceRule",
        {"input": {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}},
        token=account.token,
    )
    assert "errors" not in rule, rule
    for i in range(n):
        result = await gql(
            client, "LogEvent", {"input": {"action": "a", "prompt": f"mail u{i}@example.com"}}, token=account.token
        )
        assert "errors" not in result, result


def _decoded(cursor: str) -> object:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


async def test_cursors_reveal_no_global_sequence_and_stay_in_their_organisation(client):
    mine, theirs = await register(client, org="Mine"), await register(client, org="Theirs")
    await _alerting(client, mine, 1)
    await _alerting(client, theirs, 5)  # another tenant's alerts between two of mine
    await gql(client, "LogEvent", {"input": {"action": "a", "prompt": "mail x@example.com"}}, token=mine.token)
    page = await gql(client, "Alerts", {"first": 10}, token=mine.token)
    edges = page["data"]["alerts"]["edges"]
    assert len(edges) == 2
    for edge in edges:
        value = _decoded(edge["cursor"])
        assert value == [edge["node"]["id"]]  # the alert's own id: no number that counts anything
    # paging still works
    second = await gql(client, "Alerts", {"first": 1, "after": edges[0]["cursor"]}, token=mine.token)
    assert [e["node"]["id"] for e in second["data"]["alerts"]["edges"]] == [edges[1]["node"]["id"]]
    # another organisation's cursor is refused, and an old numeric one too
    foreign = await gql(client, "Alerts", {"first": 1, "after": edges[0]["cursor"]}, token=theirs.token)
    assert error_code(foreign) == "BAD_USER_INPUT"
    numeric = base64.urlsafe_b64encode(b"[3]").decode().rstrip("=")
    assert error_code(await gql(client, "Alerts", {"first": 1, "after": numeric}, token=mine.token)) == "BAD_USER_INPUT"
