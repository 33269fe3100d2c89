"""Registration, sign-in, tokens, profiles."""

from __future__ import annotations

import base64
import json
import time

import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import OctKey

from app.runtime.resources import Runtime
from support import TEST_SECRET, error_code, gql, register


async def _count(runtime: Runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_register_login_me(client, runtime):
    account = await register(client, email="Ada.Lovelace@Example.COM", org="Analytical")
    assert account.email == "Ada.Lovelace@Example.COM"
    login = await gql(client, "Login", {"email": "ada.lovelace@example.com", "password": account.password})
    assert "errors" not in login, login
    data = login["data"]["login"]
    assert data["organization"]["name"] == "Analytical"
    assert data["user"]["email"] == "ada.lovelace@example.com"  # normalised
    assert data["expiresAt"].endswith("Z")

    me = await gql(client, "Me", token=data["accessToken"])
    assert me["data"]["me"]["kind"] == "USER"
    assert me["data"]["me"]["user"]["role"] == "OWNER"
    assert me["data"]["me"]["organization"]["id"] == account.org_id
    assert me["data"]["me"]["apiKey"] is None
    # registering is an activity event of the new organisation
    assert await _count(runtime, "activity_events") == 1


async def test_register_rejections_write_nothing(client, runtime):
    await register(client, email="taken@example.com")
    cases = [
        ({"email": "TAKEN@example.com"}, "CONFLICT"),
        ({"email": "not-an-email"}, "BAD_USER_INPUT"),
        ({"password": "short"}, "BAD_USER_INPUT"),
        ({"name": "   "}, "BAD_USER_INPUT"),
        ({"organizationName": ""}, "BAD_USER_INPUT"),
        ({"organizationName": "x" * 201}, "BAD_USER_INPUT"),
    ]
    for override, code in cases:
        variables = {
            "email": "new@example.com",
            "password": "long enough password",
            "name": "N",
            "organizationName": "Org",
            **override,
        }
        result = await gql(client, "Register", variables)
        assert error_code(result) == code, (override, result)
    assert await _count(runtime, "users") == 1
    assert await _count(runtime, "organizations") == 1


async def test_wrong_password_and_unknown_email_fail_the_same_way(client):
    account = await register(client)
    wrong = await gql(client, "Login", {"email": account.email, "password": "wrong password!!"})
    unknown = await gql(client, "Login", {"email": "nobody@example.com", "password": "wrong password!!"})
    assert error_code(wrong) == error_code(unknown) == "UNAUTHENTICATED"
    assert wrong["errors"][0]["message"] == unknown["errors"][0]["message"]


async def test_repeated_failed_logins_are_throttled(client, settings):
    account = await register(client)
    for _ in range(settings.login_max_failures):
        result = await gql(client, "Login", {"email": account.email, "password": "wrong password!!"})
        assert error_code(result) == "UNAUTHENTICATED"
    blocked = await gql(client, "Login", {"email": account.email, "password": account.password})
    assert error_code(blocked) == "RATE_LIMITED"
    assert blocked["errors"][0]["extensions"]["retryAfter"] > 0


async def test_update_profile(client, runtime):
    account = await register(client)
    result = await gql(
        client,
        "UpdateProfile",
        {"input": {"name": "Grace", "notificationPreferences": {"email": {"alerts": "HIGH"}}}},
        token=account.token,
    )
    assert result["data"]["updateProfile"] == {
        "id": account.user_id,
        "name": "Grace",
        "notificationPreferences": {"email": {"alerts": "HIGH"}},
    }
    empty = await gql(client, "UpdateProfile", {"input": {"name": ""}}, token=account.token)
    assert error_code(empty) == "BAD_USER_INPUT"
    me = await gql(client, "Me", token=account.token)
    assert me["data"]["me"]["user"]["name"] == "Grace"


def _forge(claims: dict, *, alg: str = "HS256", key: str = TEST_SECRET) -> str:
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(key.encode()), algorithms=[alg])


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


async def test_bad_tokens_are_refused(client):
    account = await register(client)
    now = int(time.time())
    base = {"iss": "agentrail", "sub": account.user_id, "org": account.org_id, "iat": now}
    header, _payload, signature = account.token.split(".")
    tampered_payload = _b64({**base, "sub": "usr_someone_else", "exp": now + 3600})
    tokens = {
        "expired": _forge({**base, "exp": now - 120}),
        "other secret": _forge({**base, "exp": now + 3600}, key="another-secret-" + "y" * 40),
        "other algorithm": _forge({**base, "exp": now + 3600}, alg="HS512"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**base, 'exp': now + 3600})}.",
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "garbage": "not.a.token",
        "missing org": _forge({"iss": "agentrail", "sub": account.user_id, "exp": now + 3600}),
    }
    for reason, token in tokens.items():
        result = await gql(client, "Me", token=token)
        assert error_code(result) == "UNAUTHENTICATED", reason
        assert result.get("data") is None, reason
    expired = await gql(client, "Me", token=tokens["expired"])
    assert "expired" in expired["errors"][0]["message"]


async def test_malformed_headers(client):
    malformed = [
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer a b"},
        {"X-API-Key": "not-a-key"},
    ]
    for headers in malformed:
        result = await gql(client, "Me", headers=headers)
        assert error_code(result) == "UNAUTHENTICATED", headers
    anonymous = await gql(client, "Me")
    assert error_code(anonymous) == "UNAUTHENTICATED"


async def test_unexpected_errors_are_masked(client, runtime, monkeypatch):
    from app.orgs import service

    account = await register(client)

    async def broken(*_args, **_kwargs):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(service, "get_organization", broken)
    result = await gql(client, "Me", token=account.token)
    error = result["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"]
    assert "hunter2" not in json.dumps(result)
