"""REST routes for proofs (issue 16.3): a record's and an activity event's inclusion proof, and consistency proofs
between two signed digests of either trail, over the same service functions as the GraphQL fields (answers equal),
with strict parameters and the activity trail's proofs for users only."""

from __future__ import annotations

import orjson

from app.audit import sealing
from app.audit.streams import STREAMS
from app.integrity import root_from_inclusion, verify_consistency
from support import create_api_key, gql, register


async def _seal(runtime) -> None:
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS) >= 1


def _root_holds(proof: dict) -> bool:
    root = root_from_inclusion(
        proof["leafIndex"],
        proof["treeSize"],
        bytes.fromhex(proof["entryHash"]),
        [bytes.fromhex(h) for h in proof["auditPath"]],
    )
    return root.hex() == proof["digest"]["payload"]["merkle_root"]


def _consistent(proof: dict) -> bool:
    old, new = proof["fromDigest"]["payload"], proof["toDigest"]["payload"]
    return verify_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(old["merkle_root"]),
        bytes.fromhex(new["merkle_root"]),
        [bytes.fromhex(h) for h in proof["proof"]],
    )


async def _digest_ids(client, account, stream: str) -> list[str]:
    # the digests, as the bundle lists them (oldest first)
    path = "/api/v1/audit-logs/export" if stream == "audit" else "/api/v1/activity/export"
    response = await client.get(f"{path}?includeProofs=true", headers={"Authorization": f"Bearer {account.token}"})
    return [d["id"] for d in orjson.loads(response.content.split(b"\n", 1)[0])["digests"]]


async def test_inclusion_and_consistency_proofs_of_both_trails_over_rest(client, runtime):
    account = await register(client)
    user = {"Authorization": f"Bearer {account.token}"}
    key, _ = await create_api_key(client, account)
    ids = []
    for round_ in range(2):
        batch = [{"action": f"r{round_}-{i}"} for i in range(5)]
        ids += [
            r["id"]
            for r in (await gql(client, "LogEvents", {"input": batch}, token=account.token))["data"]["logEvents"]
        ]
        created = await gql(client, "CreateAgent", {"input": {"name": f"agent {round_}"}}, token=account.token)
        assert "errors" not in created, created
        await _seal(runtime)

    # a record's proof: the same answer as GraphQL's, and its path leads to the signed root
    rest = await client.get(f"/api/v1/audit-logs/{ids[2]}/proof", headers={"X-API-Key": key})
    assert rest.status_code == 200, rest.text
    assert _root_holds(rest.json()) and rest.json()["treeSize"] == 10
    graphql = (await gql(client, "AuditProof", {"recordId": ids[2]}, token=account.token))["data"]["auditProof"]
    assert graphql["auditPath"] == rest.json()["auditPath"] and graphql["digest"]["id"] == rest.json()["digest"]["id"]

    # an activity event's proof, for users
    events = await gql(client, "query { activity(first: 50) { edges { node { id } } } }", token=account.token)
    event_id = events["data"]["activity"]["edges"][-1]["node"]["id"]
    proved = await client.get(f"/api/v1/activity/{event_id}/proof", headers=user)
    assert proved.status_code == 200, proved.text
    assert proved.json()["digest"]["stream"] == "activity" and _root_holds(proved.json())
    assert (await client.get(f"/api/v1/activity/{event_id}/proof", headers={"X-API-Key": key})).status_code == 403

    # consistency between the two digests of each trail, the newer one named or by default
    for stream, base in (("audit", "/api/v1/audit-logs"), ("activity", "/api/v1/activity")):
        first, second = (await _digest_ids(client, account, stream))[:2]
        for query in (f"?toDigestId={second}", ""):
            response = await client.get(f"{base}/digests/{first}/consistency{query}", headers=user)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["toDigest"]["id"] == second and body["fromDigest"]["stream"] == stream and _consistent(body)
        backwards = await client.get(f"{base}/digests/{second}/consistency?toDigestId={first}", headers=user)
        assert backwards.status_code == 400 and backwards.json()["code"] == "BAD_USER_INPUT"
        assert (await client.get(f"{base}/digests/dgst_nope/consistency", headers=user)).status_code == 404
        assert (await client.get(f"{base}/digests/{first}/consistency?to={second}", headers=user)).status_code == 400
    graphql = await gql(
        client,
        "query($f: ID!) { activityConsistencyProof(fromDigestId: $f) { proof toDigest { id } } }",
        {"f": (await _digest_ids(client, account, "activity"))[0]},
        token=account.token,
    )
    assert "errors" not in graphql, graphql
    # a digest of the other trail is not one of this trail's
    audit_first = (await _digest_ids(client, account, "audit"))[0]
    assert (await client.get(f"/api/v1/activity/digests/{audit_first}/consistency", headers=user)).status_code == 404
    assert (await client.get(f"/api/v1/audit-logs/digests/{audit_first}/consistency")).status_code == 401
