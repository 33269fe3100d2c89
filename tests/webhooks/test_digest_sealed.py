"""Every sealed digest is published as the signed webhook event `audit.digest_sealed` (issue 16.4), so that
customers keep their own copies: the Ed25519 signature inside verifies against the published key."""

from __future__ import annotations

import orjson
import pytest

from app.audit import sealing
from app.integrity import digest_hash, verify_ed25519
from support import gql, register
from webhooks.receiver import verify_signature
from workers.settings import run_worker

pytestmark = pytest.mark.usefixtures("private_targets")


async def test_each_sealed_digest_reaches_the_subscribed_endpoints_signed(client, runtime, receiver):
    owner = await register(client)
    created = await gql(
        client, "CreateWebhookEndpoint", {"input": {"url": receiver.url(), "events": ["audit.digest_sealed"]}},
        token=owner.token,
    )  # fmt: skip
    assert "errors" not in created, created
    secret = created["data"]["createWebhookEndpoint"]["secret"]
    logged = await gql(client, "LogEvents", {"input": [{"action": "a"}, {"action": "b"}]}, token=owner.token)
    assert "errors" not in logged
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime) == 1
    await run_worker(runtime, burst=True)
    # the worker may seal the activity trail (the registration) too: one event per digest, each signed
    for request in receiver.completed:
        assert verify_signature(secret, request.headers, request.body) == [True]
    [event] = [e for e in map(orjson.loads, (r.body for r in receiver.completed)) if e["data"]["stream"] == "audit"]
    assert event["type"] == "audit.digest_sealed"
    digest = event["data"]
    assert digest["payload"]["tree_size"] == 2 and digest["payload"]["org_id"] == owner.org_id
    # what the receiver holds is checkable on its own: the canonical payload, its hash, its Ed25519 signature
    assert digest_hash(digest["payload"]) == digest["digestHash"]
    assert verify_ed25519(runtime.signer.public_key, digest["payload"], digest["signature"])
