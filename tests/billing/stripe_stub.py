"""A local Stripe for the tests, and Stripe-signed webhook events.

`StripeStub` is a real HTTP server on a free loopback port that answers the endpoints Agentrail uses
(customers, Checkout sessions, billing portal sessions) like Stripe does, honours idempotency keys, can be
told to fail, and records every request (path, headers, decoded form body).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
from pydantic import SecretStr

from app.settings import Settings

WEBHOOK_SECRET = "whsec_test_" + "k" * 32
SECRET_KEY = "sk_test_" + "a" * 24
PRICE_PRO = "price_test_pro"
PRICE_BUSINESS = "price_test_business"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class StripeStub:
    requests: list[Recorded] = field(default_factory=list)
    fail_next: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    _replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        with self._lock:
            self.requests.append(Recorded(method, path, headers, form))
            if not headers.get("authorization", "").startswith("Bearer sk_test_"):
                return 401, {}, json.dumps({"error": {"type": "invalid_request_error", "message": "no key"}}).encode()
            pending = self.fail_next.get(path)
            if pending:
                status = pending.pop(0)
                error = {"error": {"type": "api_error", "message": "stub failure"}}
                return status, {"Stripe-Should-Retry": "true"}, json.dumps(error).encode()
            key = headers.get("idempotency-key")
            if key and key in self._replies:
                status, reply = self._replies[key]
                return status, {"Idempotent-Replayed": "true"}, reply
            n = next(self._ids)
            status, obj = self._create(path, form, n)
            reply = json.dumps(obj).encode()
            if key:
                self._replies[key] = (status, reply)
            return status, {}, reply

    @staticmethod
    def _create(path: str, form: dict[str, str], n: int) -> tuple[int, dict[str, Any]]:
        if path == "/v1/customers":
            return 200, {"id": f"cus_test{n}", "object": "customer", "email": form.get("email"), "metadata": {}}
        if path == "/v1/checkout/sessions":
            sid = f"cs_test_{n}"
            return 200, {
                "id": sid,
                "object": "checkout.session",
                "mode": form.get("mode"),
                "customer": form.get("customer"),
                "client_reference_id": form.get("client_reference_id"),
                "url": f"https://checkout.stripe.test/c/pay/{sid}",
            }
        if path == "/v1/billing_portal/sessions":
            return 200, {
                "id": f"bps_test_{n}",
                "object": "billing_portal.session",
                "customer": form.get("customer"),
                "url": f"https://billing.stripe.test/p/session/bps_test_{n}",
            }
        return 404, {"error": {"type": "invalid_request_error", "message": f"unknown path {path}"}}


def start_stub() -> tuple[StripeStub, ThreadingHTTPServer]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, reply = stub.handle("POST", self.path.split("?")[0], headers, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Request-Id", f"req_test_{len(stub.requests)}")
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="stripe-stub").start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    return stub, server


def billing_settings(settings: Settings, stub: StripeStub, *, configured: bool = True, **overrides: Any) -> Settings:
    values: dict[str, Any] = {}
    if configured:
        values = {
            "stripe_secret_key": SecretStr(SECRET_KEY),
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "stripe_price_pro": PRICE_PRO,
            "stripe_price_business": PRICE_BUSINESS,
            "stripe_api_base": stub.url,
            "public_url": "https://app.agentrail.test",
        }
    values.update(overrides)
    return settings.model_copy(update=values)


# --- webhook events ----------------------------------------------------------------------------
_event_ids = itertools.count(1)


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict[str, Any], *, created: int, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{next(_event_ids)}_{int(time.time() * 1000)}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "type": type_,
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


def subscription(
    sub_id: str,
    customer: str,
    *,
    status: str = "active",
    price: str = PRICE_PRO,
    period_end: int | None = None,
    cancel_at_period_end: bool = False,
    org_id: str | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """A subscription object; `legacy` puts current_period_end on the subscription (API before 2025-03-31)."""
    end = period_end or int(time.time()) + 30 * 86400
    item: dict[str, Any] = {"id": f"si_{sub_id}", "object": "subscription_item", "price": {"id": price}}
    sub: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "metadata": {"org_id": org_id} if org_id else {},
        "items": {"object": "list", "data": [item]},
    }
    if legacy:
        sub["current_period_end"] = end
    else:
        item["current_period_end"] = end
    return sub


def invoice(invoice_id: str, customer: str, subscription_id: str, *, paid: bool) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "status": "paid" if paid else "open",
        "amount_due": 4900,
        "amount_paid": 4900 if paid else 0,
        "currency": "eur",
        "hosted_invoice_url": f"https://invoice.stripe.test/{invoice_id}",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": subscription_id}},
    }


async def send_event(
    client: httpx.AsyncClient, body: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> httpx.Response:
    payload = json.dumps(body).encode()
    return await client.post(
        "/api/v1/billing/webhook",
        content=payload,
        headers={
            "Stripe-Signature": sign(payload, secret=secret, timestamp=timestamp),
            "Content-Type": "application/json",
        },
    )


def now() -> int:
    return int(time.time())
