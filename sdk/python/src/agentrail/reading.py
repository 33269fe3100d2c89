"""Reading: GraphQL queries, traces, audit records page by page, and alerts live over the WebSocket.

The documents are those of the repository's `graphql/` folder (traces.graphql, alerts.graphql), which the
server's tests execute; the SDK's tests check these copies against the schema.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from agentrail._ws import AsyncWebSocket, WebSocket, WebSocketClosed
from agentrail.errors import AgentrailError, GraphQLError

SPAN_FIELDS = "id traceId spanId parentSpanId action status occurredAt durationMs agentId"
RECORD_FIELDS = (
    f"{SPAN_FIELDS} prompt response metadata receivedAt idempotencyKey executionId verb provider riskLevel "
    "governanceStatus dryRun idempotent args result tenantId credentialMasked checksum"
)
ALERT_FIELDS = (
    "id cursor ruleId ruleName ruleKind policyId policyVersion severity action message field excerpt "
    "startOffset endOffset auditLogId traceId agentId createdAt resolved resolvedAt resolvedBy resolutionNote"
)
TRACE = (
    "query SdkTrace($traceId: String!) { trace(traceId: $traceId) { traceId spanCount startedAt endedAt "
    f"durationMs status truncated agents {{ id name }} spans {{ {RECORD_FIELDS} depth }} }} }}"
)
AUDIT_LOGS = (
    "query SdkAuditLogs($filter: AuditLogFilter, $first: Int, $after: String) { "
    f"auditLogs(filter: $filter, first: $first, after: $after) {{ edges {{ cursor node {{ {RECORD_FIELDS} }} }} "
    "pageInfo { hasNextPage endCursor } } }"
)
LIVE_ALERTS = (
    "subscription SdkLiveAlerts($filter: AlertFilter, $after: String) { "
    f"alerts(filter: $filter, after: $after) {{ {ALERT_FIELDS} }} }}"
)
DOCUMENTS = {"trace": TRACE, "audit_logs": AUDIT_LOGS, "alerts": LIVE_ALERTS}

RETRIED_CODES = {"RATE_LIMITED", "UNAVAILABLE"}
FATAL_CODES = {"UNAUTHENTICATED", "FORBIDDEN", "BAD_USER_INPUT", "NOT_FOUND", "QUOTA_EXCEEDED"}
FATAL_CLOSE = {4400, 4401, 4403, 4406}  # graphql-transport-ws: bad request, unauthorized, forbidden, subprotocol
ATTEMPTS = 4


def _answer(response: httpx.Response) -> tuple[Any, float | None]:
    """(data, None) or (None, seconds to wait) for a retryable refusal; raises otherwise."""
    try:
        body = response.json()
    except ValueError:
        raise AgentrailError(
            f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code
        ) from None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        error = GraphQLError(errors, body.get("data"))
        if error.code in RETRIED_CODES:
            retry = (errors[0].get("extensions") or {}).get("retryAfter", 1)
            return None, float(retry) if isinstance(retry, int | float) else 1.0
        raise error
    if response.status_code in (429, 503):
        return None, float(response.headers.get("retry-after", "1") or 1)
    if response.status_code >= 400 or not isinstance(body, dict):
        raise AgentrailError(f"HTTP {response.status_code}: {str(body)[:200]}", status=response.status_code)
    return body.get("data"), None


def ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :] + "/graphql"
    return "ws://" + base_url.split("://", 1)[-1] + "/graphql"


def graphql(http: httpx.Client, query: str, variables: dict[str, Any] | None) -> Any:
    for attempt in range(ATTEMPTS):
        data, wait = _answer(http.post("/graphql", json={"query": query, "variables": variables or {}}))
        if wait is None:
            return data
        if attempt == ATTEMPTS - 1:
            raise AgentrailError("still refused after retries (rate limited or unavailable)", status=429)
        time.sleep(min(wait, 30.0))
    raise AssertionError("unreachable")


async def agraphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None) -> Any:
    for attempt in range(ATTEMPTS):
        data, wait = _answer(await http.post("/graphql", json={"query": query, "variables": variables or {}}))
        if wait is None:
            return data
        if attempt == ATTEMPTS - 1:
            raise AgentrailError("still refused after retries (rate limited or unavailable)", status=429)
        await asyncio.sleep(min(wait, 30.0))
    raise AssertionError("unreachable")


def audit_log_pages(
    http: httpx.Client, filter: dict[str, Any] | None, page_size: int, limit: int | None
) -> Iterator[dict[str, Any]]:
    after: str | None = None
    seen = 0
    while True:
        first = page_size if limit is None else min(page_size, limit - seen)
        if first <= 0:
            return
        page = graphql(http, AUDIT_LOGS, {"filter": filter, "first": first, "after": after})["auditLogs"]
        for edge in page["edges"]:
            seen += 1
            yield edge["node"]
        if not page["pageInfo"]["hasNextPage"] or not page["edges"]:
            return
        after = page["pageInfo"]["endCursor"]


async def aaudit_log_pages(
    http: httpx.AsyncClient, filter: dict[str, Any] | None, page_size: int, limit: int | None
) -> AsyncIterator[dict[str, Any]]:
    after: str | None = None
    seen = 0
    while True:
        first = page_size if limit is None else min(page_size, limit - seen)
        if first <= 0:
            return
        page = (await agraphql(http, AUDIT_LOGS, {"filter": filter, "first": first, "after": after}))["auditLogs"]
        for edge in page["edges"]:
            seen += 1
            yield edge["node"]
        if not page["pageInfo"]["hasNextPage"] or not page["edges"]:
            return
        after = page["pageInfo"]["endCursor"]


class _Resume:
    """What a live stream keeps across reconnections: the last cursor and the backoff."""

    def __init__(self, after: str | None, max_backoff: float) -> None:
        self.cursor = after
        self.failures = 0
        self.max_backoff = max_backoff
        self.reconnects = 0

    def delay(self) -> float:
        self.failures += 1
        cap = min(self.max_backoff, 0.25 * 2 ** min(self.failures - 1, 10))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """An alert from a `next` message (None for other types); raises on a fatal error."""
        kind = message.get("type")
        if kind == "next":
            payload = message.get("payload") or {}
            if payload.get("errors"):
                error = GraphQLError(payload["errors"], payload.get("data"))
                if error.code in FATAL_CODES:
                    raise error
                raise WebSocketClosed(None, f"stream error {error.code}: {error}")  # resume from the cursor
            alert: dict[str, Any] = (payload.get("data") or {}).get("alerts") or {}
            if alert.get("cursor"):
                self.cursor = alert["cursor"]
            self.failures = 0
            return alert
        if kind == "error":
            raise GraphQLError(message.get("payload") or [])
        if kind == "complete":
            raise WebSocketClosed(None, "the server completed the subscription")
        return None


def _init(api_key: str | None) -> str:
    return json.dumps({"type": "connection_init", "payload": {"x-api-key": api_key} if api_key else {}})


def _subscribe(filter: dict[str, Any] | None, after: str | None) -> str:
    variables = {"filter": filter, "after": after}
    return json.dumps({"id": "1", "type": "subscribe", "payload": {"query": LIVE_ALERTS, "variables": variables}})


class AlertStream:
    """`for alert in client.alerts(): …` — alerts as they are raised, over graphql-transport-ws. After a lost
    connection it reconnects (backoff with jitter) and resumes after the last alert it yielded (`cursor`):
    nothing missed, nothing twice. `close()` (from any thread) ends the iteration."""

    def __init__(
        self, url: str, api_key: str | None, filter: dict[str, Any] | None, after: str | None, reconnect: bool
    ) -> None:
        self._url, self._key, self._filter, self._reconnect = url, api_key, filter, reconnect
        self._state = _Resume(after, 10.0)
        self._ws: WebSocket | None = None
        self._closed = threading.Event()

    @property
    def cursor(self) -> str | None:
        return self._state.cursor

    @property
    def reconnects(self) -> int:
        return self._state.reconnects

    def __iter__(self) -> AlertStream:
        return self

    def _open(self) -> WebSocket:
        ws = WebSocket(self._url, "graphql-transport-ws")
        ws.send(_init(self._key))
        while True:
            message = json.loads(ws.recv())
            if message.get("type") == "connection_ack":
                break
            if message.get("type") == "ping":
                ws.send(json.dumps({"type": "pong"}))
        ws.send(_subscribe(self._filter, self._state.cursor))
        return ws

    def __next__(self) -> dict[str, Any]:
        while not self._closed.is_set():
            try:
                if self._ws is None:
                    self._ws = self._open()
                    if self._closed.is_set():
                        break
                message = json.loads(self._ws.recv())
                if message.get("type") == "ping":
                    self._ws.send(json.dumps({"type": "pong"}))
                    continue
                alert = self._state.handle(message)
                if alert is not None:
                    return alert
            except (WebSocketClosed, OSError, ValueError) as exc:
                self._drop()
                if self._closed.is_set():
                    break
                if isinstance(exc, WebSocketClosed) and exc.code in FATAL_CLOSE:
                    raise AgentrailError(f"the server closed the subscription: {exc}", code=str(exc.code)) from exc
                if not self._reconnect:
                    raise StopIteration from exc
                self._closed.wait(self._state.delay())
                self._state.reconnects += 1
        raise StopIteration

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def close(self) -> None:
        self._closed.set()
        self._drop()


class AsyncAlertStream:
    """`async for alert in client.alerts(): …`, the same as AlertStream."""

    def __init__(
        self, url: str, api_key: str | None, filter: dict[str, Any] | None, after: str | None, reconnect: bool
    ) -> None:
        self._url, self._key, self._filter, self._reconnect = url, api_key, filter, reconnect
        self._state = _Resume(after, 10.0)
        self._ws: AsyncWebSocket | None = None
        self._closed = False

    @property
    def cursor(self) -> str | None:
        return self._state.cursor

    @property
    def reconnects(self) -> int:
        return self._state.reconnects

    def __aiter__(self) -> AsyncAlertStream:
        return self

    async def _open(self) -> AsyncWebSocket:
        ws = await AsyncWebSocket.connect(self._url, "graphql-transport-ws")
        await ws.send(_init(self._key))
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "connection_ack":
                break
            if message.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong"}))
        await ws.send(_subscribe(self._filter, self._state.cursor))
        return ws

    async def __anext__(self) -> dict[str, Any]:
        while not self._closed:
            try:
                if self._ws is None:
                    self._ws = await self._open()
                message = json.loads(await self._ws.recv())
                if message.get("type") == "ping":
                    await self._ws.send(json.dumps({"type": "pong"}))
                    continue
                alert = self._state.handle(message)
                if alert is not None:
                    return alert
            except (TimeoutError, WebSocketClosed, OSError, ValueError) as exc:
                await self._drop()
                if self._closed:
                    break
                if isinstance(exc, WebSocketClosed) and exc.code in FATAL_CLOSE:
                    raise AgentrailError(f"the server closed the subscription: {exc}", code=str(exc.code)) from exc
                if not self._reconnect:
                    raise StopAsyncIteration from exc
                await asyncio.sleep(self._state.delay())
                self._state.reconnects += 1
        raise StopAsyncIteration

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()
