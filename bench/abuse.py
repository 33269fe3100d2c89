"""Cost attack: while one API key runs the worst queries it can write in a loop, another organisation's `me` and
`logEvent` latencies, and the server's memory.

    .venv/bin/python bench/abuse.py [--seconds 30] [--attackers 4] [--warmup 20]

The attacker (its own process, so its client's CPU does not slow the victim's) loops over the queries of
issue 15 (auditLogs→trace→spans→chain, traces→spans→chain, agents→traces→spans→trace→spans with first:500,
30 aliases × metrics(groupBy: [AGENT, ACTION, STATUS, HOUR]), 30 × policyAnalytics, a 2,000-term search OR)
and the heaviest ones that stay within the cost limit and every other check, so that they really run (a whole
trace's spans with every field, 500-record pages, 4 aliased metrics over the longest range allowed, 400 days, a
32-term search), on `--attackers` connections. Its outcomes are counted apart for the warm-up and for the
measured window (`attacker_measured`: what runs once the budget it started with is spent). The victim, another
organisation, sends `me` and `logEvent` 8 times a second on one connection, first on the idle server, then
under attack once the attacker has spent the budget it started with (`--warmup`). Plan limits are enforced as
in production (free plan: 10 requests a second per key).
Target: victim p99 under attack within 10 % of idle; server RSS under 600 MB.
Prints JSON with the CPU reference `sum(range(3*10**7))` timed beside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from _server import realistic_record, running_server

SPAN_FIELDS = (
    "id traceId spanId parentSpanId action prompt response metadata status occurredAt durationMs agentId verb provider"
)
FROM = "2020-01-01T00:00:00Z"
# the within-limit metrics read the longest range allowed (400 days; older is refused before it runs)
WITHIN_FROM = (datetime.now(UTC) - timedelta(days=399)).strftime("%Y-%m-%dT%H:%M:%SZ")
OVER_LIMIT = {
    "auditLogs_trace_spans_chain": (
        "{ auditLogs(first: 500) { edges { node { trace { spans { id chain { id } } } } } } }"
    ),
    "traces_spans_chain": "{ traces(first: 500) { edges { node { spans { id chain { id } } } } } }",
    "agents_traces_spans_trace_spans": (
        "{ agents(first: 500) { edges { node { traces(first: 500) { edges { node { spans { id trace { spans { id } } "
        "} } } } } } } }"
    ),
    "metrics_x30": "{ "
    + " ".join(f'm{i}: metrics(from: "{FROM}", groupBy: [AGENT, ACTION, STATUS, HOUR]) {{ count }}' for i in range(30))
    + " }",
    "policyAnalytics_x30": "{ "
    + " ".join(f"a{i}: policyAnalytics {{ recordsEvaluated violations }}" for i in range(30))
    + " }",
    "search_or_2000": "query($s: String) { auditLogs(first: 50, filter: {search: $s}) { edges { node { id } } } }",
}
WITHIN_LIMIT = {
    "trace_spans_all_fields": f"query($t: String!) {{ trace(traceId: $t) {{ spans {{ {SPAN_FIELDS} }} }} }}",
    "auditLogs_500_all_fields": f"{{ auditLogs(first: 500) {{ edges {{ node {{ {SPAN_FIELDS} }} }} }} }}",
    "metrics_x4": "{ "
    + " ".join(
        f'm{i}: metrics(from: "{WITHIN_FROM}", groupBy: [AGENT, ACTION, STATUS, HOUR]) {{ count }}' for i in range(4)
    )
    + " }",
    "search_or_32": "query($s: String) { auditLogs(first: 50, filter: {search: $s}) { edges { node { id } } } }",
}
PACE = 0.125
SEARCH_2000 = " OR ".join(random.Random(1).choice(["refund", "order", "x", "policy"]) + str(i) for i in range(2000))
SEARCH_32 = " OR ".join(["refund", "order", "customer", "policy", "invoice", "agent", "tool", "search"] * 4)


def cpu_reference() -> float:
    started = time.perf_counter()
    sum(range(3 * 10**7))
    return round(time.perf_counter() - started, 3)


def _variables(name: str, trace_id: str) -> dict:
    if name == "search_or_2000":
        return {"s": SEARCH_2000}
    if name == "search_or_32":
        return {"s": SEARCH_32}
    if name == "trace_spans_all_fields":
        return {"t": trace_id}
    return {}


async def _attack(
    url: str, api_key: str, trace_id: str, connections: int, seconds: float, warmup: float, out: dict
) -> None:
    outcomes: Counter[str] = Counter()
    queries = [*OVER_LIMIT.items(), *WITHIN_LIMIT.items()]
    started = time.monotonic()
    deadline = started + seconds

    async def loop(client: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            name, query = queries[i % len(queries)]
            i += 1
            try:
                response = await client.post("/graphql", json={"query": query, "variables": _variables(name, trace_id)})
                body = response.json()
                errors = body.get("errors") or []
                code = errors[0].get("extensions", {}).get("code") if errors else "OK"
            except (httpx.HTTPError, ValueError) as exc:
                code = type(exc).__name__
            # outcomes of the measured window apart: what the attacker gets once its starting budget is spent
            phase = "warmup" if time.monotonic() - started < warmup else "measured"
            outcomes[f"{phase}:{name}:{code}"] += 1

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": api_key}, timeout=120, limits=limits) as client:
        await asyncio.gather(*(loop(client, k) for k in range(connections)))
    out.update(outcomes)


def attacker_process(
    url: str, api_key: str, trace_id: str, connections: int, seconds: float, warmup: float, queue: object
) -> None:
    out: dict = {}
    asyncio.run(_attack(url, api_key, trace_id, connections, seconds, warmup, out))
    queue.put(out)  # type: ignore[attr-defined]


async def victim(url: str, token: str, api_key: str, seconds: float) -> dict:
    """`me` then `logEvent`, every PACE seconds (an agent within its plan's 10 requests a second)."""
    me: list[float] = []
    log: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            next_at += PACE
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            n += 1
            started = time.perf_counter()
            response = await client.post(
                "/graphql",
                json={"query": "{ me { kind organization { id name } } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            me.append((time.perf_counter() - started) * 1000)
            assert "errors" not in response.json(), response.text[:300]
            started = time.perf_counter()
            response = await client.post(
                "/graphql",
                json={
                    "query": "mutation($i: AuditLogInput!) { logEvent(input: $i) { id } }",
                    "variables": {"i": {"action": "victim_call", "prompt": f"hello {n}", "traceId": f"v-{n // 50}"}},
                },
                headers={"X-API-Key": api_key},
            )
            log.append((time.perf_counter() - started) * 1000)
            assert "errors" not in response.json(), response.text[:300]
    return {"me": _percentiles(me), "logEvent": _percentiles(log)}


def _percentiles(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[max(0, int(len(samples) * 0.99) - 1)], 2),
        "max_ms": round(samples[-1], 1),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def seed(client: httpx.AsyncClient, token: str) -> str:
    rng = random.Random(7)
    for a in range(20):
        await client.post(
            "/graphql",
            json={"query": f'mutation {{ createAgent(input: {{name: "agent {a}"}}) {{ id }} }}'},
            headers={"Authorization": f"Bearer {token}"},
        )
    big = "abuse-big"
    records = [realistic_record(rng, big, i, fanout=8) for i in range(10_000)]
    records += [realistic_record(rng, f"abuse-{t}", i, fanout=4) for t in range(100) for i in range(50)]
    for start in range(0, len(records), 1000):
        response = await client.post(
            "/api/v1/audit-logs/batch",
            content=orjson.dumps(records[start : start + 1000]),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 201, response.text[:200]
    return big


def victim_account(url: str) -> tuple[str, str]:
    """Another organisation: its user's token (for `me`) and an API key (for `logEvent`)."""
    signup = httpx.post(
        f"{url}/graphql",
        timeout=30,
        json={
            "query": 'mutation { register(email: "victim@example.com", password: "victim password", '
            'name: "V", organizationName: "Victim") { accessToken } }'
        },
    ).json()
    token = signup["data"]["register"]["accessToken"]
    created = httpx.post(
        f"{url}/graphql",
        headers={"Authorization": f"Bearer {token}"},
        json={"query": 'mutation { createApiKey(name: "victim") { secret } }'},
    ).json()
    return token, created["data"]["createApiKey"]["secret"]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=20)
    args = parser.parse_args()
    # as in production: plan limits enforced (the attacker's key gets the free plan's 10 requests a second), the
    # record quota lifted for the seeded data
    os.environ.setdefault("AGENTRAIL_ENFORCE_LIMITS", "true")
    os.environ.setdefault("AGENTRAIL_PLAN_LIMITS", '{"free": {"records_per_month": 100000000}}')
    results: dict = {
        "benchmark": "abuse",
        "cpu_reference_s": cpu_reference(),
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "attackers": args.attackers,
    }
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=120) as c:
            trace_id = await seed(c, server.token)
        token, key = await asyncio.to_thread(victim_account, server.url)
        await asyncio.to_thread(server.settle)
        await victim(server.url, token, key, 3)  # warm up
        results["idle"] = await victim(server.url, token, key, args.seconds)
        results["idle_rss_mb"] = round(rss_mb(server.pid), 1)

        queue: multiprocessing.Queue = multiprocessing.Queue()
        attacker = multiprocessing.Process(
            target=attacker_process,
            args=(
                server.url,
                server.api_key,
                trace_id,
                args.attackers,
                args.warmup + args.seconds + 2,
                args.warmup,
                queue,
            ),
        )
        peak = 0.0
        attacker.start()
        sampler_stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not sampler_stop.is_set():
                peak = max(peak, rss_mb(server.pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        # the attacker first spends the budget it starts with (a burst of up to AGENTRAIL_QUERY_COST_BUDGET
        # points); measured is the steady state of an attacker looping for good
        await asyncio.sleep(args.warmup)
        results["under_attack"] = await victim(server.url, token, key, args.seconds)
        outcomes = await asyncio.to_thread(queue.get, True, args.warmup + args.seconds + 120)
        await asyncio.to_thread(attacker.join, 30)
        sampler_stop.set()
        await sampler
        results["attacker_outcomes"] = dict(sorted(outcomes.items()))
        results["attacker_requests"] = sum(outcomes.values())
        measured = {k: v for k, v in outcomes.items() if k.startswith("measured:")}
        results["attacker_measured"] = {
            "requests_per_s": round(sum(measured.values()) / args.seconds, 1),
            "ok": sum(v for k, v in measured.items() if k.endswith(":OK")),
            "rate_limited": sum(v for k, v in measured.items() if k.endswith(":RATE_LIMITED")),
            "refused_too_costly_or_invalid": sum(v for k, v in measured.items() if k.endswith(":BAD_USER_INPUT")),
        }
        results["server_rss_mb_under_attack_max"] = round(peak, 1)
        results["server_peak_rss_mb"] = server.peak_rss_mb()
    results["victim_p99_ratio"] = {
        op: round(results["under_attack"][op]["p99_ms"] / results["idle"][op]["p99_ms"], 3) for op in ("me", "logEvent")
    }
    results["target"] = {"victim_p99_ratio_max": 1.10, "server_rss_mb_max": 600}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
