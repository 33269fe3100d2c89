"""REST /api/v1/auth/* as the API reference documents it (seed 002): register, login, me, api-keys; plus refresh
and logout. Shapes, status codes and rejections (nothing written)."""

from __future__ import annotations

import sqlalchemy as sa

from support import register

PASSWORD = "correct horse battery staple"


async def _count(runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_login_me_and_api_keys_as_documented(client, runtime):
    account = await register(client, org="Acme Corp")
    login = await client.post("/api/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert login.status_code == 200
    body = login.json()
    assert body["accessToken"].startswith("eyJ") and body["refreshToken"].startswith("rt_")
    assert body["organization"] == {"id": account.org_id, "email": account.email, "plan": "free", "name": "Acme Corp"}
    bearer = {"Authorization": f"Bearer {body['accessToken']}"}

    me = await client.get("/api/v1/auth/me", headers=bearer)
    assert me.status_code == 200 and me.json()["user"]["email"] == account.email
    patched = await client.patch("/api/v1/auth/me", json={"name": "Renamed"}, headers=bearer)
    assert patched.status_code == 200 and patched.json()["user"]["name"] == "Renamed"

    created = await client.post("/api/v1/auth/api-keys", json={"name": "production-agent"}, headers=bearer)
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("aa_live_") and key["id"].startswith("key_") and key["name"] == "production-agent"
    listed = (await client.get("/api/v1/auth/api-keys", headers=bearer)).json()["apiKeys"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    as_key = await client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})
    assert as_key.json()["kind"] == "api_key"
    deleted = await client.delete(f"/api/v1/auth/api-keys/{key['id']}", headers=bearer)
    assert deleted.status_code == 200 and deleted.json()["revokedAt"]
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})).status_code == 401

    renewed = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
    assert renewed.status_code == 200
    reused = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
    assert reused.status_code == 401 and reused.json()["code"] == "UNAUTHENTICATED"
    new_bearer = {"Authorization": f"Bearer {renewed.json()['accessToken']}"}
    assert (await client.get("/api/v1/auth/me", headers=new_bearer)).status_code == 401  # the family ended


async def test_register_and_logout(client):
    made = await client.post(
        "/api/v1/auth/register",
        json={"email": "new@example.com", "password": PASSWORD, "name": "N", "organizationName": "New Co"},
    )
    assert made.status_code == 201
    bearer = {"Authorization": f"Bearer {made.json()['accessToken']}"}
    assert (await client.post("/api/v1/auth/logout", headers=bearer)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=bearer)).status_code == 401


async def test_rejections_are_4xx_and_write_nothing(client, runtime):
    account = await register(client)
    bearer = {"Authorization": f"Bearer {account.token}"}
    users, keys = await _count(runtime, "users"), await _count(runtime, "api_keys")
    cases = [
        ("POST", "/api/v1/auth/login", {"email": account.email}, 400),
        ("POST", "/api/v1/auth/login", {"email": account.email, "password": "wrong password"}, 401),
        ("POST", "/api/v1/auth/login", {"email": account.email, "password": PASSWORD, "extra": 1}, 400),
        ("POST", "/api/v1/auth/login", [], 400),
        (
            "POST",
            "/api/v1/auth/register",
            {"email": account.email, "password": PASSWORD, "name": "x", "organizationName": "y"},
            409,
        ),
        (
            "POST",
            "/api/v1/auth/register",
            {"email": "bad", "password": PASSWORD, "name": "x", "organizationName": "y"},
            400,
        ),
        ("POST", "/api/v1/auth/refresh", {"refreshToken": "rt_nope.0.x"}, 401),
        ("POST", "/api/v1/auth/refresh", {"refreshToken": 5}, 400),
        ("POST", "/api/v1/auth/api-keys", {}, 400),
        ("POST", "/api/v1/auth/api-keys", {"name": "k", "scopes": ["ADMIN"]}, 400),
        ("POST", "/api/v1/auth/api-keys", {"name": "k", "agentIds": ["agent_nope"]}, 400),
        ("DELETE", "/api/v1/auth/api-keys/key_nope", None, 404),
        ("PATCH", "/api/v1/auth/me", {"role": "owner"}, 400),
    ]
    for method, path, body, status in cases:
        response = await client.request(method, path, json=body, headers=bearer)
        assert response.status_code == status, (method, path, body, response.text)
        assert response.json()["status"] == status
    assert (await client.post("/api/v1/auth/login?x=1", json={})).status_code == 400
    assert await _count(runtime, "users") == users and await _count(runtime, "api_keys") == keys
