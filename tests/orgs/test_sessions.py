"""Issue 20.4: sessions (15-minute access tokens, rotating refresh tokens, family revocation on reuse, cookie mode
with CSRF protection, body mode), logout, sessions, revokeSession, changePassword, password reset, email
verification; through graphql/auth.graphql."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from app.db import utcnow
from support import emailed_token, error_code, gql, operation, register

PASSWORD = "correct horse battery staple"


async def _login(client, account, **variables) -> dict:
    result = await gql(client, "Login", {"email": account.email, "password": account.password, **variables})
    assert "errors" not in result, result
    return result["data"]["login"]


async def test_access_tokens_are_short_and_refresh_tokens_rotate(client, runtime):
    account = await register(client)
    signed_in = await _login(client, account)
    lifetime = datetime.fromisoformat(signed_in["expiresAt"].replace("Z", "+00:00")) - utcnow()
    assert 14 * 60 < lifetime.total_seconds() <= 15 * 60
    first = signed_in["refreshToken"]
    assert first.startswith("rt_") and signed_in["csrfToken"] is None
    renewed = (await gql(client, "RefreshSession", {"refreshToken": first}))["data"]["refreshSession"]
    assert renewed["sessionId"] == signed_in["sessionId"] and renewed["refreshToken"] != first
    assert "errors" not in await gql(client, "Me", token=renewed["accessToken"])
    # the first one again: a copy is in use somewhere, so the whole session ends
    reused = await gql(client, "RefreshSession", {"refreshToken": first})
    assert error_code(reused) == "UNAUTHENTICATED" and "already used" in reused["errors"][0]["message"]
    assert error_code(await gql(client, "Me", token=renewed["accessToken"])) == "UNAUTHENTICATED"
    assert error_code(await gql(client, "RefreshSession", {"refreshToken": renewed["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )
    for bad in ("", "rt_x", "rt_ses_x.1.abc", "x" * 500, first[:-2] + "zz"):
        assert error_code(await gql(client, "RefreshSession", {"refreshToken": bad})) == "UNAUTHENTICATED"
    # the refresh token is nowhere in the database (only the session's salt)
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM sign_in_sessions"))).all()
    assert first not in repr(rows) and first.split(".")[-1] not in repr(rows)


async def test_cookie_mode_is_httponly_samesite_and_csrf_checked(client):
    account = await register(client)
    variables = {"email": account.email, "password": account.password, "refreshTokenIn": "COOKIE"}
    response = await client.post("/graphql", json={"query": operation("Login"), "variables": variables})
    data = response.json()["data"]["login"]
    assert data["refreshToken"] is None and data["csrfToken"]
    cookies = response.headers.get_list("set-cookie")
    refresh = next(c for c in cookies if c.startswith("agentrail_refresh="))
    assert "HttpOnly" in refresh and "SameSite=strict" in refresh and "Path=/" in refresh
    csrf = next(c for c in cookies if c.startswith("agentrail_csrf="))
    assert "HttpOnly" not in csrf
    # the browser sends the cookie by itself; without the CSRF header (another site's form) it is refused
    refused = await gql(client, "RefreshSession", {})
    assert error_code(refused) == "FORBIDDEN"
    wrong = await gql(client, "RefreshSession", {}, headers={"X-CSRF-Token": "guess"})
    assert error_code(wrong) == "FORBIDDEN"
    ok = await gql(client, "RefreshSession", {}, headers={"X-CSRF-Token": data["csrfToken"]})
    renewed = ok["data"]["refreshSession"]
    assert renewed["refreshToken"] is None and renewed["csrfToken"]
    logout = await gql(client, "Logout", token=renewed["accessToken"])
    assert logout["data"]["logout"] is True
    assert error_code(await gql(client, "Me", token=renewed["accessToken"])) == "UNAUTHENTICATED"
    client.cookies.clear()
    assert error_code(await gql(client, "RefreshSession", {})) == "UNAUTHENTICATED"


async def test_sessions_list_and_revoke(client):
    account = await register(client)
    laptop = await gql(
        client, "Login", {"email": account.email, "password": account.password}, headers={"User-Agent": "Laptop/1.0"}
    )
    laptop_token = laptop["data"]["login"]["accessToken"]
    listed = (await gql(client, "Sessions", token=account.token))["data"]["sessions"]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    other = next(s for s in listed if not s["current"])
    assert other["device"] == "Laptop/1.0" and other["ipAddress"] and other["method"] == "password"
    revoked = await gql(client, "RevokeSession", {"id": other["id"]}, token=account.token)
    assert revoked["data"]["revokeSession"]["id"] == other["id"]
    assert error_code(await gql(client, "Me", token=laptop_token)) == "UNAUTHENTICATED"
    trail = (await gql(client, "Activity", {}, token=account.token))["data"]["activity"]["edges"]
    assert "session.revoked" in [e["node"]["action"] for e in trail]
    stranger = await register(client)
    mine = (await gql(client, "Sessions", token=account.token))["data"]["sessions"][0]["id"]
    assert error_code(await gql(client, "RevokeSession", {"id": mine}, token=stranger.token)) == "NOT_FOUND"


async def test_change_password_ends_the_other_sessions(client, runtime):
    account = await register(client)
    other = await _login(client, account)
    wrong = await gql(
        client, "ChangePassword", {"currentPassword": "nope nope nope", "newPassword": "n" * 12}, token=account.token
    )
    assert error_code(wrong) == "BAD_USER_INPUT"
    short = await gql(
        client, "ChangePassword", {"currentPassword": PASSWORD, "newPassword": "short"}, token=account.token
    )
    assert error_code(short) == "BAD_USER_INPUT"
    assert "errors" not in await gql(client, "Me", token=other["accessToken"])  # nothing changed yet
    changed = await gql(
        client, "ChangePassword", {"currentPassword": PASSWORD, "newPassword": "n" * 12}, token=account.token
    )
    assert changed["data"]["changePassword"] is True
    assert error_code(await gql(client, "Me", token=other["accessToken"])) == "UNAUTHENTICATED"
    assert "errors" not in await gql(client, "Me", token=account.token)  # the caller's own goes on
    assert error_code(await gql(client, "Login", {"email": account.email, "password": PASSWORD})) == ("UNAUTHENTICATED")
    assert "errors" not in await gql(client, "Login", {"email": account.email, "password": "n" * 12})


async def test_password_reset_answers_the_same_and_works_once(client, runtime):
    account = await register(client)
    session = await _login(client, account)
    known = await gql(client, "RequestPasswordReset", {"email": account.email})
    unknown = await gql(client, "RequestPasswordReset", {"email": "nobody@example.com"})
    malformed = await gql(client, "RequestPasswordReset", {"email": "not an email"})
    assert known == unknown == malformed == {"data": {"requestPasswordReset": True}}
    async with runtime.db.engine.connect() as conn:
        to = (
            await conn.execute(sa.text("SELECT to_address FROM email_outbox WHERE template = 'password_reset'"))
        ).all()
    assert [r[0] for r in to] == [account.email]
    token = await emailed_token(runtime, account.email, "password_reset")
    short = await gql(client, "ResetPassword", {"token": token, "newPassword": "short"})
    assert error_code(short) == "BAD_USER_INPUT"
    reset = await gql(client, "ResetPassword", {"token": token, "newPassword": "r" * 12})
    assert reset["data"]["resetPassword"] is True
    assert error_code(await gql(client, "ResetPassword", {"token": token, "newPassword": "s" * 12})) == (
        "BAD_USER_INPUT"
    )
    assert error_code(await gql(client, "Me", token=session["accessToken"])) == "UNAUTHENTICATED"
    assert error_code(await gql(client, "RefreshSession", {"refreshToken": session["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )
    assert "errors" not in await gql(client, "Login", {"email": account.email, "password": "r" * 12})
    # an inbox is not flooded
    for _ in range(8):
        await gql(client, "RequestPasswordReset", {"email": account.email})
    async with runtime.db.engine.connect() as conn:
        count = (await conn.execute(sa.text("SELECT count(*) FROM user_tokens WHERE purpose = 'reset'"))).scalar_one()
    assert count == 5


async def test_email_verification(client, runtime):
    account = await register(client)
    me = await gql(client, "Me", token=account.token)
    assert me["data"]["me"]["user"]["emailVerified"] is False
    token = await emailed_token(runtime, account.email, "verification")
    assert (await gql(client, "VerifyEmail", {"token": token}))["data"]["verifyEmail"] is True
    assert error_code(await gql(client, "VerifyEmail", {"token": token})) == "BAD_USER_INPUT"
    me = await gql(client, "Me", token=account.token)
    assert me["data"]["me"]["user"]["emailVerified"] is True
    assert (await gql(client, "RequestEmailVerification", token=account.token))["data"]["requestEmailVerification"]


async def test_ending_a_session_closes_its_subscriptions(client, live_server):
    import websockets

    from support import GraphQLWebSocket

    account = await register(client)
    other = await _login(client, account)
    sockets = []
    for token in (account.token, other["accessToken"]):
        ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {token}"})
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe("subscription { alerts { id } }")
        sockets.append(ws)
    assert (await gql(client, "Logout", token=other["accessToken"]))["data"]["logout"] is True
    try:
        while True:
            await sockets[1].receive(5)
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd.code == 4403
    # the signed-out session's only: the other one is still open
    await sockets[0].connection.ping()
    await sockets[0].close()


async def test_what_no_sign_in_can_use_is_removed_hourly(client, runtime):
    from datetime import timedelta

    from app.orgs import sessions as sign_ins
    from app.unit_of_work import system_unit_of_work

    account = await register(client)
    old = await _login(client, account)
    await gql(client, "RequestPasswordReset", {"email": account.email})
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE sign_in_sessions SET revoked_at = :at WHERE id = :id"),
            {"at": utcnow() - timedelta(days=31), "id": old["sessionId"]},
        )
        await conn.execute(sa.text("UPDATE user_tokens SET expires_at = now() - interval '8 days'"))
    async with system_unit_of_work(runtime) as session:
        removed = await sign_ins.remove_expired(session)
    assert removed == 3  # the old session, the reset and the verification tokens
    assert "errors" not in await gql(client, "Me", token=account.token)  # the live session stays


async def test_password_reset_requests_are_limited_per_address(client):
    for i in range(20):
        assert "errors" not in await gql(client, "RequestPasswordReset", {"email": f"n{i}@example.com"})
    limited = await gql(client, "RequestPasswordReset", {"email": "someone@example.com"})
    assert error_code(limited) == "RATE_LIMITED" and limited["errors"][0]["extensions"]["retryAfter"] > 0


async def test_a_refresh_token_an_agent_logs_is_masked(client, runtime):
    account = await register(client)
    refresh = (await _login(client, account))["refreshToken"]
    logged = await gql(
        client, "LogEvent", {"input": {"action": "x", "prompt": f"resume with {refresh} please"}}, token=account.token
    )
    assert "errors" not in logged, logged
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT prompt, credential_masked FROM audit_logs"))).one()
    assert refresh not in row.prompt and "[REDACTED]" in row.prompt and row.credential_masked is True
