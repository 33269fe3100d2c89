"""A local OpenID provider for the tests, built with Authlib's server-side pieces (PKCE S256 checks from
authlib.oauth2.rfc7636, OAuth error answers from authlib.oauth2.rfc6749) and joserfc keys, served by uvicorn
from a small Starlette app: discovery, /authorize (answers at once with a redirect carrying the code, as a
provider whose user is already signed in), /token (client_secret_basic, PKCE), /jwks, and a file to verify
domains. `mode` makes it misbehave: a wrong signature, an expired token, a foreign audience, an old nonce."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidGrantError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from support import free_port


class Provider:
    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id, self.client_secret = "agentrail-test", secrets.token_urlsafe(16)
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, not published
        self.user: dict[str, Any] = {"sub": "u-1", "email": "ann@acmecorp.com", "email_verified": True, "name": "Ann"}
        self.mode = "ok"
        self.codes: dict[str, dict[str, Any]] = {}
        self.nonces: list[str] = []
        self.domain_files: dict[str, str] = {}
        self.token_requests = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # --- endpoints --------------------------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        assert q["response_type"] == "code" and q["client_id"] == self.client_id
        assert q["code_challenge_method"] == "S256" and "openid" in q["scope"].split()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"]}
        self.nonces.append(q["nonce"])
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            client_id, _, secret = (
                base64.b64decode(value).decode().partition(":") if scheme == "Basic" else ("", "", "")
            )
            if (client_id, secret) != (self.client_id, self.client_secret):
                raise InvalidClientError()
            grant = self.codes.pop(str(form.get("code")), None)
            if grant is None or form.get("grant_type") != "authorization_code":
                raise InvalidGrantError()
            if form.get("redirect_uri") != grant["redirect_uri"]:
                raise InvalidGrantError(description="redirect_uri")
            if create_s256_code_challenge(str(form.get("code_verifier", ""))) != grant["challenge"]:
                raise InvalidGrantError(description="PKCE verifier does not match")
        except (InvalidClientError, InvalidGrantError) as error:
            status, body, headers = error()
            return Response(body, status_code=status, headers=dict(headers))
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.user["sub"],
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            **{k: v for k, v in self.user.items() if k != "sub"},
        }
        key = self.key
        if self.mode == "wrong_signature":
            key = self.other_key
        elif self.mode == "expired":
            claims.update(iat=now - 3600, exp=now - 1800)
        elif self.mode == "foreign_audience":
            claims["aud"] = "someone-else"
        elif self.mode == "replayed_nonce":
            claims["nonce"] = self.nonces[0]  # the first login's nonce, in a later login's token
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        return JSONResponse(
            {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        )

    async def domain_file(self, request: Request) -> Response:
        text = self.domain_files.get(request.path_params["domain"])
        return PlainTextResponse(text or "not here", status_code=200 if text else 404)

    # --- serving ----------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/domains/{domain}", self.domain_file),
            ]
        )

    async def start(self) -> None:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
