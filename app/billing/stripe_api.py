"""The Stripe client, built from settings for each use: no module-level `stripe.api_key`, no global state.

`AGENTRAIL_STRIPE_API_BASE` points it elsewhere (the tests' local Stripe); requests are async (httpx),
retried by the library on network errors with the same idempotency key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import stripe
import structlog

from app.errors import AppError
from app.settings import Settings

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 20
MAX_NETWORK_RETRIES = 2


class PaymentProviderError(AppError):
    """Stripe refused or did not answer. The details are logged; the client sees a retryable message."""

    code = "INTERNAL"
    http_status = 502


@asynccontextmanager
async def stripe_client(settings: Settings) -> AsyncIterator[stripe.StripeClient]:
    assert settings.stripe_secret_key is not None
    http_client = stripe.HTTPXClient(timeout=TIMEOUT_SECONDS)
    base_addresses: Any = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    client = stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        base_addresses=base_addresses,
        http_client=http_client,
        max_network_retries=MAX_NETWORK_RETRIES,
    )
    try:
        yield client
    except stripe.StripeError as exc:
        log.error(
            "stripe request failed",
            error_type=type(exc).__name__,
            status=exc.http_status,
            stripe_code=exc.code,
            stripe_request_id=exc.request_id,
            message=str(exc),
        )
        raise PaymentProviderError("the payment provider did not accept the request; try again shortly") from None
    finally:
        await http_client.close_async()


def verify_event(payload: bytes, signature: str | None, settings: Settings) -> None:
    """Raises stripe.SignatureVerificationError (bad, missing, too old or too far in the future signature) or
    ValueError (not JSON)."""
    assert settings.stripe_webhook_secret is not None
    tolerance = settings.stripe_webhook_tolerance_seconds
    stripe.Webhook.construct_event(payload, signature, settings.stripe_webhook_secret.get_secret_value(), tolerance)
    # the library only refuses signatures older than the tolerance; one dated ahead would stay replayable
    # until that date plus the tolerance, so the window applies both ways
    signed_at = _signed_at(signature or "")
    if signed_at is not None and signed_at > time.time() + tolerance:
        raise stripe.SignatureVerificationError("timestamp is in the future", signature, payload)


def _signed_at(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return None
