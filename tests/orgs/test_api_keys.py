"""API keys: created once, hashed, listed, revoked; and tenancy: another organisation's keys are invisible."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from support import create_api_key, error_code, gql, register


async def test_create_list_use_revoke(client, runtime):
    account = await register(client)
    secret, key_id = await create_api_key(client, account, "production agent")
    assert secret.startswith("aa_live_") and len(secret) >= len("aa_live_") + 43

    # stored only as a hash, with a display prefix
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT prefix, secret_hash FROM api_keys"))).one()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(row.prefix) and len(row.prefix) < 16
    dump = await _dump_all_tables(runtime)
    assert secret not in dump

    # the key authenticates, both ways, and lastUsedAt is tracked
    for headers in ({"X-API-Key": secret}, {"Authorization": f"Bearer {secret}"}):
        me = await gql(client, "Me", headers=headers)
        assert me["data"]["me"]["kind"] == "API_KEY"
        assert me["data"]["me"]["apiKey"]["id"] == key_id
        assert me["data"]["me"]["organization"]["id"] == account.org_id
    listed = await gql(client, "ApiKeys", token=account.token)
    node = listed["data"]["apiKeys"]["edges"][0]["node"]
    assert node["lastUsedAt"] is not None and node["revokedAt"] is None
    assert node["prefix"] == secret[: len(node["prefix"])]

    revoked = await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)
    assert revoked["data"]["revokeApiKey"]["revokedAt"] is not None
    again = await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)  # idempotent
    assert again["data"]["revokeApiKey"]["revokedAt"] == revoked["data"]["revokeApiKey"]["revokedAt"]

    # a revoked key fails on its very next request
    after = await gql(client, "Me", api_key=secret)
    assert error_code(after) == "UNAUTHENTICATED"
    assert "revoked" in after["errors"][0]["message"]

    active_only = await gql(client, "ApiKeys", {"includeRevoked": False}, token=account.token)
    assert active_only["data"]["apiKeys"]["edges"] == []


async def _dump_all_tables(runtime) -> str:
    async with runtime.db.engine.connect() as conn:
        names = (
            (await conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
        )
        parts = []
        for name in names:
            rows = (await conn.execute(sa.text(f'SELECT * FROM "{name}"'))).all()
            parts.append(repr(rows))
    return "\n".join(parts)


async def test_a_key_cannot_manage_keys(client, runtime):
    account = await register(client)
    secret, key_id = await create_api_key(client, account)
    create = await gql(client, "CreateApiKey", {"name": "sneaky"}, api_key=secret)
    assert error_code(create) == "FORBIDDEN"
    revoke = await gql(client, "RevokeApiKey", {"id": key_id}, api_key=secret)
    assert error_code(revoke) == "FORBIDDEN"
    listing = await gql(client, "ApiKeys", api_key=secret)
    assert error_code(listing) == "FORBIDDEN"
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar_one() == 1


async def test_key_name_is_validated(client, runtime):
    account = await register(client)
    for name in ("", "   ", "x" * 201):
        result = await gql(client, "CreateApiKey", {"name": name}, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT"
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar_one() == 0


async def test_unknown_and_forged_keys(client):
    for key in ("aa_live_" + "A" * 43, "aa_live_", "aa_"):
        result = await gql(client, "Me", api_key=key)
        assert error_code(result) == "UNAUTHENTICATED"


async def test_another_organisations_keys_are_invisible(client):
    alice = await register(client, org="Alice Org")
    mallory = await register(client, org="Mallory Org")
    _secret, alice_key = await create_api_key(client, alice, "alice's")
    await create_api_key(client, mallory, "mallory's")

    listed = await gql(client, "ApiKeys", token=mallory.token)
    names = [e["node"]["name"] for e in listed["data"]["apiKeys"]["edges"]]
    assert names == ["mallory's"]

    stolen = await gql(client, "RevokeApiKey", {"id": alice_key}, token=mallory.token)
    assert error_code(stolen) == "NOT_FOUND"
    assert stolen.get("data") is None
    still = await gql(client, "ApiKeys", token=alice.token)
    assert still["data"]["apiKeys"]["edges"][0]["node"]["revokedAt"] is None


async def test_pagination(client):
    account = await register(client)
    ids = [(await create_api_key(client, account, f"key {i}"))[1] for i in range(5)]
    seen, after = [], None
    while True:
        page = await gql(client, "ApiKeys", {"first": 2, "after": after}, token=account.token)
        conn = page["data"]["apiKeys"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == list(reversed(ids))
    for bad in ({"first": 0}, {"first": 501}, {"after": "garbage!"}):
        result = await gql(client, "ApiKeys", bad, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT", bad
