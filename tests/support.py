"""Helpers for tests: run the operations in graphql/, register accounts, read error codes."""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path
from typing import Any

import httpx

# the secret key of the tests' runtimes (tokens, signed links): one module every test can import, unlike a
# conftest, whose name several folders share
TEST_SECRET = "test-secret-" + "x" * 40

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS_DIR = ROOT / "graphql"


# --- GraphQL helpers ---------------------------------------------------------------------------
def operation(name: str) -> str:
    """The document in graphql/*.graphql that defines operation `name` (plus the fragments it uses)."""
    return _operations()[name]


_CACHE: dict[str, str] = {}


def _operations() -> dict[str, str]:
    if _CACHE:
        return _CACHE
    pattern = re.compile(r"^(query|mutation|subscription|fragment)\s+(\w+)", re.M)
    for path in sorted(OPERATIONS_DIR.glob("*.graphql")):
        text = path.read_text()
        starts = [(m.start(), m.group(1), m.group(2)) for m in pattern.finditer(text)]
        blocks: dict[str, tuple[str, str]] = {}
        for i, (start, kind, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            blocks[name] = (kind, text[start:end].strip())
        fragments = {n: b for n, (k, b) in blocks.items() if k == "fragment"}
        for name, (kind, body) in blocks.items():
            if kind == "fragment":
                continue
            needed: dict[str, str] = {}
            pending = [body]
            while pending:
                for used in re.findall(r"\.\.\.\s*(\w+)", pending.pop()):
                    if used in fragments and used not in needed:
                        needed[used] = fragments[used]
                        pending.append(fragments[used])
            _CACHE[name] = "\n\n".join([body, *needed.values()])
    return _CACHE


def auth_headers(token: str | None = None, api_key: str | None = None) -> dict[str, str]:
    if api_key:
        return {"X-API-Key": api_key}
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


async def gql(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    if re.fullmatch(r"\w+", query):
        query = operation(query)
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={**auth_headers(token, api_key), **(headers or {})},
    )
    assert response.status_code in (200, 400), response.text
    return response.json()


def error_code(result: dict[str, Any]) -> str | None:
    errors = result.get("errors") or []
    return errors[0].get("extensions", {}).get("code") if errors else None


class Account:
    """A registered user with a token, for tests."""

    def __init__(self, email: str, password: str, token: str, user_id: str, org_id: str) -> None:
        self.email, self.password, self.token, self.user_id, self.org_id = (
            email,
            password,
            token,
            user_id,
            org_id,
        )


async def register(http: httpx.AsyncClient, *, email: str | None = None, org: str = "Acme") -> Account:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    password = "correct horse battery staple"
    result = await gql(
        http, "Register", {"email": email, "password": password, "name": "Test User", "organizationName": org}
    )
    assert "errors" not in result, result
    data = result["data"]["register"]
    return Account(email, password, data["accessToken"], data["user"]["id"], data["organization"]["id"])


async def create_api_key(http: httpx.AsyncClient, account: Account, name: str = "agent") -> tuple[str, str]:
    result = await gql(http, "CreateApiKey", {"name": name}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createApiKey"]["secret"], result["data"]["createApiKey"]["apiKey"]["id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GraphQLWebSocket:
    """A minimal graphql-transport-ws client over the `websockets` library."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._next_id = 0

    @classmethod
    async def connect(cls, base: str, payload: dict[str, Any] | None = None, **options: Any) -> GraphQLWebSocket:
        import json

        import websockets

        connection = await websockets.connect(f"ws://{base}/graphql", subprotocols=["graphql-transport-ws"], **options)
        client = cls(connection)
        await connection.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        return client

    async def receive(self, timeout: float = 5.0, *, pings: bool = False) -> dict[str, Any]:
        """The next message within `timeout` seconds. The server's keep-alive pings (every
        AGENTRAIL_WS_PING_INTERVAL_SECONDS) are answered with a pong and skipped, as a graphql-transport-ws
        client does, unless `pings` asks for them: a test that runs longer than the interval sees no ping
        where it waits for its data."""
        import asyncio
        import json
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            message = json.loads(await asyncio.wait_for(self.connection.recv(), remaining))
            if pings or not isinstance(message, dict) or message.get("type") != "ping":
                return message
            await self.connection.send(json.dumps({"type": "pong"}))

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        import json

        if re.fullmatch(r"\w+", query):
            query = operation(query)
        self._next_id += 1
        op_id = str(self._next_id)
        message = {
            "id": op_id,
            "type": "subscribe",
            "payload": {"query": query, "variables": variables or {}},
        }
        await self.connection.send(json.dumps(message))
        return op_id

    async def close(self) -> None:
        await self.connection.close()


def agentrail_command() -> list[str]:
    """How to run the CLI as a subprocess: the installed console script, as users do."""
    import sys

    script = Path(sys.executable).with_name("agentrail")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


async def add_user(runtime: Any, settings: Any, account: Account, role: str) -> tuple[str, str]:
    """A user of `role` in the account's organisation (added directly, not invited); returns (user id, token)."""
    import sqlalchemy as sa

    from app.db import new_id

    user_id = new_id("usr")
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, email, name, password_hash, notification_preferences, created_at,"
                " updated_at) VALUES (:id, :email, 'Added', 'x', '{}', now(), now())"
            ),
            {"id": user_id, "email": f"{user_id}@example.com"},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO memberships (id, org_id, user_id, role, joined_at) VALUES (:id, :org, :user, :role, now())"
            ),
            {"id": new_id("mem"), "org": account.org_id, "user": user_id, "role": role},
        )
    return user_id, (await session_token(runtime, settings, user_id, account.org_id)).token


async def session_token(runtime: Any, settings: Any, user_id: str, org_id: str, *, lifetime: Any = None) -> Any:
    """An access token (AccessToken) of a new sign-in session of the user in `org_id`."""
    from datetime import timedelta

    from app.orgs import sessions
    from app.orgs.credentials import TokenSigner
    from app.orgs.models import User
    from app.unit_of_work import system_unit_of_work

    signer = TokenSigner(runtime.secret_key, issuer=settings.jwt_issuer, lifetime=lifetime or timedelta(minutes=30))
    async with system_unit_of_work(runtime) as session:
        user = await session.get(User, user_id)
        issued = await sessions.start(
            session, signer, settings, user=user, org_id=org_id, user_agent="tests", ip_address="127.0.0.1"
        )
    return issued.access


async def emailed_token(runtime: Any, to: str, template: str) -> str:
    """The single-use token of the latest email of `template` to `to` still in the outbox (from its link)."""
    import sqlalchemy as sa

    async with runtime.db.engine.connect() as conn:
        body = (
            await conn.execute(
                sa.text(
                    "SELECT body_text FROM email_outbox WHERE to_address = :to AND template = :t"
                    " ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                {"to": to.lower(), "t": template},
            )
        ).scalar_one()
    found = re.search(r"#token=([\w-]+)", body)
    assert found, body
    return found.group(1)


def rest_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """A REST failure: `status`, in the error shape `{"error", "status", "code"}`; its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["error"] and body["code"], body
    return body
