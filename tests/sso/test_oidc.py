"""Issue 20.5: single sign-on end to end against a local OpenID provider (tests/sso/provider.py): discovery,
code flow with PKCE, state and nonce, the ID token checked against the JWKS; verified domains with a default
role; SSO required; and the refusals: a wrong signature, a replayed nonce, an expired token, a foreign audience,
a domain not verified, a state used twice, a loopback issuer without the test setting."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa

from support import error_code, gql, register


async def _configure(client, owner, provider, **extra) -> dict:
    variables = {
        "input": {
            "issuer": provider.issuer,
            "clientId": provider.client_id,
            "clientSecret": provider.client_secret,
            "defaultRole": "VIEWER",
            **extra,
        }
    }
    result = await gql(client, "ConfigureSso", variables, token=owner.token)
    assert "errors" not in result, result
    return result["data"]["configureSso"]


async def _verified_domain(client, owner, provider, domain: str = "acmecorp.com") -> None:
    added = (await gql(client, "AddSsoDomain", {"domain": domain}, token=owner.token))["data"]["addSsoDomain"]
    provider.domain_files[domain] = added["verificationToken"]
    verified = await gql(client, "VerifySsoDomain", {"id": added["id"]}, token=owner.token)
    assert verified["data"]["verifySsoDomain"]["verified"] is True, verified


async def _sign_in(client, provider, **start) -> dict:
    """startSso, then the browser at the provider (which redirects at once), then completeSso."""
    started = await gql(client, "StartSso", start)
    assert "errors" not in started, started
    url = started["data"]["startSso"]["authorizationUrl"]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    async with httpx.AsyncClient() as browser:
        redirect = await browser.get(url)
    assert redirect.status_code == 302
    back = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert back["state"] == [started["data"]["startSso"]["state"]]
    return await gql(client, "CompleteSso", {"code": back["code"][0], "state": back["state"][0]})


async def test_a_new_person_in_a_verified_domain_joins_with_the_default_role(client, runtime, provider):
    owner = await register(client, org="Acme")
    shown = await _configure(client, owner, provider)
    assert shown["configured"] and shown["issuer"] == provider.issuer and shown["redirectUri"].endswith("/sso/callback")
    async with runtime.db.engine.connect() as conn:
        sealed = (await conn.execute(sa.text("SELECT client_secret_sealed FROM sso_providers"))).scalar_one()
    assert provider.client_secret not in sealed  # stored encrypted
    await _verified_domain(client, owner, provider)
    result = await _sign_in(client, provider, email="ann@acmecorp.com")
    assert "errors" not in result, result
    data = result["data"]["completeSso"]
    assert data["user"]["email"] == "ann@acmecorp.com" and data["user"]["role"] == "VIEWER"
    assert data["organization"]["name"] == "Acme"
    me = await gql(client, "Me", token=data["accessToken"])
    assert me["data"]["me"]["user"]["emailVerified"] is True
    # a second sign-in finds the member
    again = (await _sign_in(client, provider, organizationId=owner.org_id))["data"]["completeSso"]
    assert again["user"]["id"] == data["user"]["id"]
    sessions = (await gql(client, "Sessions", token=again["accessToken"]))["data"]["sessions"]
    assert {s["method"] for s in sessions} == {"sso"}
    # the settings as an admin reads them (never the secret), and a domain given up
    read = (await gql(client, "SsoSettings", token=owner.token))["data"]["ssoSettings"]
    assert read["clientId"] == provider.client_id and read["defaultRole"] == "VIEWER" and "clientSecret" not in read
    domain = read["domains"][0]
    assert domain["domain"] == "acmecorp.com" and domain["verified"] is True
    assert (await gql(client, "RemoveSsoDomain", {"id": domain["id"]}, token=owner.token))["data"]["removeSsoDomain"]
    assert (await gql(client, "SsoSettings", token=owner.token))["data"]["ssoSettings"]["domains"] == []
    assert error_code(await gql(client, "RemoveSsoDomain", {"id": domain["id"]}, token=owner.token)) == "NOT_FOUND"


async def test_tokens_the_provider_got_wrong_are_refused(client, runtime, provider):
    owner = await register(client)
    await _configure(client, owner, provider)
    await _verified_domain(client, owner, provider)
    assert "errors" not in await _sign_in(client, provider, organizationId=owner.org_id)  # the first nonce
    for mode, words in (
        ("wrong_signature", "signature"),
        ("expired", "expired"),
        ("foreign_audience", "aud"),
        ("replayed_nonce", "nonce"),
    ):
        provider.mode = mode
        result = await _sign_in(client, provider, organizationId=owner.org_id)
        assert error_code(result) == "UNAUTHENTICATED", (mode, result)
        assert words in result["errors"][0]["message"].lower(), (mode, result)
    async with runtime.db.engine.connect() as conn:
        users = (await conn.execute(sa.text("SELECT count(*) FROM users"))).scalar_one()
    assert users == 2  # the owner and the first sign-in, nobody else


async def test_a_domain_not_verified_does_not_join(client, provider):
    owner = await register(client)
    await _configure(client, owner, provider)
    added = (await gql(client, "AddSsoDomain", {"domain": "acmecorp.com"}, token=owner.token))["data"]["addSsoDomain"]
    refused = await gql(client, "VerifySsoDomain", {"id": added["id"]}, token=owner.token)
    assert error_code(refused) == "BAD_USER_INPUT"  # the provider serves no file for it
    result = await _sign_in(client, provider, organizationId=owner.org_id)
    assert error_code(result) == "FORBIDDEN" and "not a verified domain" in result["errors"][0]["message"]
    # by email, an unverified domain finds no organisation
    assert error_code(await gql(client, "StartSso", {"email": "ann@acmecorp.com"})) == "NOT_FOUND"


async def test_the_state_works_once(client, provider):
    owner = await register(client)
    await _configure(client, owner, provider)
    await _verified_domain(client, owner, provider)
    started = (await gql(client, "StartSso", {"organizationId": owner.org_id}))["data"]["startSso"]
    async with httpx.AsyncClient() as browser:
        back = parse_qs(urlsplit((await browser.get(started["authorizationUrl"])).headers["location"]).query)
    variables = {"code": back["code"][0], "state": back["state"][0]}
    assert "errors" not in await gql(client, "CompleteSso", variables)
    assert error_code(await gql(client, "CompleteSso", variables)) == "BAD_USER_INPUT"
    assert error_code(await gql(client, "CompleteSso", {"code": "x", "state": "nope"})) == "BAD_USER_INPUT"


async def test_sso_required_turns_password_sign_in_off_for_members(client, runtime, provider):
    owner = await register(client)
    await _configure(client, owner, provider, ssoRequired=True, defaultRole="MEMBER")
    await _verified_domain(client, owner, provider)
    assert "errors" not in await _sign_in(client, provider, organizationId=owner.org_id)
    async with runtime.db.engine.begin() as conn:  # give the SSO member a password too
        from app.orgs.credentials import hash_password

        await conn.execute(
            sa.text("UPDATE users SET password_hash = :h WHERE email = 'ann@acmecorp.com'"),
            {"h": hash_password("p" * 12)},
        )
    refused = await gql(client, "Login", {"email": "ann@acmecorp.com", "password": "p" * 12})
    assert error_code(refused) == "FORBIDDEN" and "single sign-on" in refused["errors"][0]["message"]
    # owners keep password sign-in (so a broken provider cannot lock the organisation out)
    assert "errors" not in await gql(client, "Login", {"email": owner.email, "password": owner.password})


async def test_provider_fetches_pass_the_ssrf_guard(client, runtime, provider, monkeypatch):
    owner = await register(client)
    monkeypatch.setattr(runtime.settings, "sso_allow_loopback", False)
    refused = await gql(
        client,
        "ConfigureSso",
        {"input": {"issuer": provider.issuer, "clientId": "c", "clientSecret": "s"}},
        token=owner.token,
    )
    assert error_code(refused) == "BAD_USER_INPUT" and "discovery failed" in refused["errors"][0]["message"]
    for issuer in ("ftp://x", "http://169.254.169.254", "not a url"):
        result = await gql(
            client,
            "ConfigureSso",
            {"input": {"issuer": issuer, "clientId": "c", "clientSecret": "s"}},
            token=owner.token,
        )
        assert error_code(result) == "BAD_USER_INPUT", (issuer, result)
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM sso_providers"))).scalar_one() == 0
    # a member cannot configure it
    from support import add_user

    _, member = await add_user(runtime, runtime.settings, owner, "member")
    assert error_code(await gql(client, "SsoSettings", token=member)) == "FORBIDDEN"
