"""Relay cursor connections both ways (`first`/`after`, `last`/`before`) while rows keep arriving."""

from __future__ import annotations

import asyncio

import pytest

from support import error_code, gql, register

AUDIT_PAGE = """
query ($first: Int, $after: String, $last: Int, $before: String) {
  auditLogs(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

AGENT_PAGE = """
query ($first: Int, $after: String, $last: Int, $before: String) {
  agents(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

ALERT_PAGE = """
query ($first: Int, $after: String, $last: Int, $before: String) {
  alerts(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


async def _page(client, token, document, field, **variables):
    result = await gql(client, document, variables, token=token)
    assert "errors" not in result, result
    connection = result["data"][field]
    return [e["node"]["id"] for e in connection["edges"]], connection["pageInfo"], connection["edges"]


async def _forward(client, token, document, field, size, during=None):
    ids, after = [], None
    while True:
        page, info, _ = await _page(client, token, document, field, first=size, after=after)
        ids += page
        if during is not None:
            await during()
        if not info["hasNextPage"]:
            return ids
        after = info["endCursor"]


async def _backward(client, token, document, field, size, during=None):
    ids, before = [], None
    while True:
        page, info, _ = await _page(client, token, document, field, last=size, before=before)
        ids = page + ids
        if during is not None:
            await during()
        if not info["hasPreviousPage"]:
            return ids
        before = info["startCursor"]


async def _log(client, account, n: int) -> str:
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": f"p{n}"}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]["id"]


async def test_audit_logs_page_both_ways_under_concurrent_inserts(client):
    account = await register(client)
    for n in range(23):
        await _log(client, account, n)
    snapshot, _, _ = await _page(client, account.token, AUDIT_PAGE, "auditLogs", first=100)
    assert len(snapshot) == 23
    counter = iter(range(100, 1000))

    async def insert_two():  # newer records arrive at the head of the list while we page
        await asyncio.gather(_log(client, account, next(counter)), _log(client, account, next(counter)))

    # forward from the start: every record of the start's snapshot once, in order; the new ones are ahead of it
    first_page, _, _ = await _page(client, account.token, AUDIT_PAGE, "auditLogs", first=5)
    assert first_page == snapshot[:5]
    forward = await _forward(client, account.token, AUDIT_PAGE, "auditLogs", 5, during=insert_two)
    assert len(forward) == len(set(forward))
    assert forward[-23:] == snapshot and len(forward) >= 23
    # backward from the end: the oldest first, then newer pages up to the head, new records included, no
    # duplicate, no gap, in list order
    backward = await _backward(client, account.token, AUDIT_PAGE, "auditLogs", 4, during=insert_two)
    assert len(backward) == len(set(backward))
    assert backward[-23:] == snapshot
    everything, _, _ = await _page(client, account.token, AUDIT_PAGE, "auditLogs", first=500)
    assert backward == everything[len(everything) - len(backward) :]
    assert len(backward) > len(forward)  # it also saw what was inserted while it paged


async def test_page_info_both_ways(client):
    account = await register(client)
    ids = [await _log(client, account, n) for n in range(7)][::-1]  # newest first
    token = account.token
    page, info, edges = await _page(client, token, AUDIT_PAGE, "auditLogs", first=3)
    assert page == ids[:3]
    assert info == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": edges[0]["cursor"],
        "endCursor": edges[-1]["cursor"],
    }
    page, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", first=3, after=info["endCursor"])
    assert page == ids[3:6] and info["hasNextPage"] and info["hasPreviousPage"]
    page, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", first=3, after=info["endCursor"])
    assert page == ids[6:] and not info["hasNextPage"] and info["hasPreviousPage"]

    page, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", last=3)
    assert page == ids[4:] and info["hasPreviousPage"] and not info["hasNextPage"]
    page, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", last=3, before=info["startCursor"])
    assert page == ids[1:4] and info["hasPreviousPage"] and info["hasNextPage"]
    page, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", last=3, before=info["startCursor"])
    assert page == ids[:1] and not info["hasPreviousPage"] and info["hasNextPage"]

    # both cursors: the rows between them
    _, _, edges = await _page(client, token, AUDIT_PAGE, "auditLogs", first=7)
    page, _, _ = await _page(
        client, token, AUDIT_PAGE, "auditLogs", after=edges[1]["cursor"], before=edges[5]["cursor"]
    )
    assert page == ids[2:5]
    empty, info, _ = await _page(client, token, AUDIT_PAGE, "auditLogs", last=3, before=edges[0]["cursor"])
    assert empty == [] and info["startCursor"] is None and not info["hasPreviousPage"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"first": 2, "last": 2}, "first and last"),
        ({"last": 0}, "last must be between"),
        ({"last": 501}, "last must be between"),
        ({"last": 2, "before": "nope"}, "before is not a valid cursor"),
    ],
)
async def test_bad_page_arguments(client, variables, message):
    account = await register(client)
    result = await gql(client, AUDIT_PAGE, variables, token=account.token)
    assert error_code(result) == "BAD_USER_INPUT" and message in result["errors"][0]["message"], result


async def test_agents_and_alerts_page_both_ways(client):
    account = await register(client)
    for n in range(7):
        result = await gql(client, "CreateAgent", {"input": {"name": f"agent {n}"}}, token=account.token)
        assert "errors" not in result, result
    rule = await gql(client, "CreateComplianceRule", {"input": {"name": "Email", "kind": "PII",
                     "config": {"types": ["email"]}}}, token=account.token)  # fmt: skip
    assert "errors" not in rule, rule
    for n in range(7):
        await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": f"mail u{n}@example.com"}},
                  token=account.token)  # fmt: skip
    for document, field in ((AGENT_PAGE, "agents"), (ALERT_PAGE, "alerts")):
        everything, _, _ = await _page(client, account.token, document, field, first=100)
        assert len(everything) >= 7, field
        assert await _forward(client, account.token, document, field, 3) == everything, field
        assert await _backward(client, account.token, document, field, 3) == everything, field
