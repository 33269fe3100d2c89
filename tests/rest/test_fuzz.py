"""Schemathesis against the generated OpenAPI document: every operation, a few generated requests each (bounded),
sent with an owner's token to the app on a real uvicorn. No answer may be a 5xx, every error is the documented
`{"error", "status", "code"}` shape, and every response matches the schema the document gives for its status
(schemathesis' response_schema_conformance check)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance

from support import register

EXAMPLES = int(os.environ.get("AGENTRAIL_REST_FUZZ_EXAMPLES", "4"))


def _fuzz(spec: dict[str, Any], base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    sent = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/api/v1/auth/logout", "/api/v1/billing/webhook"):
            continue  # ends the fuzzer's own session / needs a Stripe signature (tested in tests/billing)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            sent[0] += 1
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                return
            if response.status_code >= 400 and case.path.startswith("/api/"):  # OTLP answers OTLP's Status
                body = response.json()
                if not (isinstance(body, dict) and {"error", "status", "code"} <= body.keys()):
                    failures.append(f"{where}: {response.status_code} without the error shape: {response.text[:200]}")
            if case.path in ("/v1/traces", "/v1/logs") and case.method == "POST":
                return  # OTLP's answers are protobuf messages (or their JSON mapping), documented by OTLP
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of the failed checks
                failures.append(f"{where}: {response.status_code} does not match its schema: {str(exc)[:300]}")

        check()
    return sent[0], failures


async def test_no_route_answers_5xx_to_generated_requests(client, live_server):
    account = await register(client)
    spec = (await client.get("/api/v1/openapi.json")).json()
    headers = {"Authorization": f"Bearer {account.token}"}
    base = live_server if "://" in live_server else f"http://{live_server}"
    sent, failures = await asyncio.to_thread(_fuzz, spec, base, headers)
    assert sent > len(spec["paths"]), sent
    assert not failures, "\n".join(failures[:30])
