"""Live alert fan-out: N WebSocket subscribers of one organisation, alerts ingested at R per second.

    .venv/bin/python bench/alerts_fanout.py [--subscribers 1000] [--rate 100] [--seconds 10] [--nodes 1]

With `--nodes 2` a second API process serves half of the subscribers and takes half of the ingest requests
(alerts reach it through Redis): it needs DATABASE_URL and REDIS_URL (e.g. the local servers) and
AGENTRAIL_SECRET_KEY, shared by both processes.

Latency is measured from the moment the ingest request's response arrives to the delivery of the alert at
each subscriber (negative when the alert arrives before the response: it is published at commit), and
from the start of the ingest request (all on this machine, one API process). Prints JSON with p50/p99,
how many deliveries arrived, and the CPU the API process spent. Target: p99 < 100 ms for 1,000
subscribers at 100 alerts/s.

The subscribers run in their own process, a lean graphql-transport-ws client on raw sockets and epoll (no
asyncio, frames parsed by hand, a message looked at only for its auditLogId), so that the load generator
takes as little as possible of the two cores the server needs. Both processes time with CLOCK_MONOTONIC
(`time.perf_counter`), which is the same clock across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import select
import socket
import statistics
import struct
import time

import httpx
from _server import extra_node, process_cpu_seconds, running_server

SUBSCRIPTION = "subscription { alerts { id auditLogId severity excerpt createdAt } }"
RULE = """mutation { createComplianceRule(input: {name: "Email", kind: PII, config: {types: ["email"]}}) { id } }"""
LOG = 'mutation($p: String!) { logEvent(input: {action: "llm_call", prompt: $p}) { id } }'
MARK = b'"auditLogId":"'


def _client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked frame, as a client must send (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    header = bytes((0x80 | opcode, 0x80 | length)) if length < 126 else struct.pack("!BBH", 0x80 | opcode, 254, length)
    return header + mask + masked


def _open(host: str, port: int, token: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response[:200]
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}
    sock.sendall(b"".join(_client_frame(json.dumps(m).encode()) for m in (init, subscribe)))
    sock.setblocking(False)
    return sock


def subscribers(addresses: list[tuple[str, int]], token: str, count: int, ready, stop, out_path: str) -> None:
    """The subscriber process: `count` connections (spread over `addresses`) on one epoll loop; arrivals
    written to `out_path`."""
    sockets = {}
    epoll = select.epoll()
    for number in range(count):
        host, port = addresses[number % len(addresses)]
        sock = _open(host, port, token)
        sockets[sock.fileno()] = sock
        epoll.register(sock.fileno(), select.EPOLLIN)
    buffers = dict.fromkeys(sockets, b"")
    arrivals: list[tuple[bytes, float]] = []
    append = arrivals.append
    ready.set()
    while not stop.is_set():
        for fd, _event in epoll.poll(0.2):
            sock = sockets[fd]
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.perf_counter()
            if not data:
                epoll.unregister(fd)
                continue
            buffer = buffers[fd] + data if buffers[fd] else data
            pos, size = 0, len(buffer)
            while size - pos >= 2:
                opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
                start = pos + 2
                if length == 126:
                    if size - pos < 4:
                        break
                    length, start = struct.unpack_from("!H", buffer, pos + 2)[0], pos + 4
                elif length == 127:
                    if size - pos < 10:
                        break
                    length, start = struct.unpack_from("!Q", buffer, pos + 2)[0], pos + 10
                end = start + length
                if size < end:
                    break
                if opcode in (1, 2):  # text (binary from servers that send JSON as bytes)
                    at = buffer.find(MARK, start, end)
                    if at >= 0:
                        at += len(MARK)
                        append((buffer[at : buffer.index(b'"', at)], now))
                elif opcode == 9:  # ping: answer with a pong carrying the same data
                    sock.sendall(_client_frame(buffer[start:end], opcode=0xA))
                pos = end
            buffers[fd] = buffer[pos:]
    with open(out_path, "w") as out:
        json.dump([(log_id.decode(), at) for log_id, at in arrivals], out)
    for sock in sockets.values():
        sock.close()


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _read_arrivals(path: str) -> list[tuple[str, float]]:
    with open(path) as source:
        arrivals = json.load(source)
    os.unlink(path)
    return arrivals


def _percentile(values: list[float], share: float) -> float | None:
    return round(values[max(0, int(len(values) * share) - 1)], 1) if values else None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="alerts ingested per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="API processes")
    args = parser.parse_args()
    with running_server() as server, contextlib.ExitStack() as nodes:
        urls, pids = [server.url], [server.pid]
        if args.nodes == 2:
            url, pid = nodes.enter_context(extra_node())
            urls.append(url)
            pids.append(pid)
        addresses = [(u.removeprefix("http://").split(":")[0], int(u.rsplit(":", 1)[1])) for u in urls]
        headers = {"Authorization": f"Bearer {server.token}"}
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=u, headers=headers, timeout=60))
                for u in urls
            ]
            client = clients[0]
            await client.post("/graphql", json={"query": RULE})
            context = multiprocessing.get_context("spawn")
            ready, stop = context.Event(), context.Event()
            out_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fanout-{os.getpid()}.json")
            process = context.Process(
                target=subscribers, args=(addresses, server.token, args.subscribers, ready, stop, out_path)
            )
            process.start()
            await asyncio.to_thread(ready.wait, 300)
            await asyncio.sleep(2.0)  # connection_init, subscribe and registration with Redis
            sent: dict[str, float] = {}
            sent_start: dict[str, float] = {}
            interval = 1.0 / args.rate

            async def ingest(number: int) -> None:
                request_started = time.perf_counter()
                response = await clients[number % len(clients)].post(
                    "/graphql", json={"query": LOG, "variables": {"p": f"mail user{number}@example.com"}}
                )
                log_id = response.json()["data"]["logEvent"]["id"]
                sent[log_id] = time.perf_counter()
                sent_start[log_id] = request_started

            # requests start on a fixed schedule, whether or not earlier ones have answered
            requests = []
            cpu_before = sum(process_cpu_seconds(pid) for pid in pids)
            client_cpu_before = process_cpu_seconds(process.pid) + _own_cpu_seconds()
            started = time.perf_counter()
            n = 0
            while time.perf_counter() - started < args.seconds:
                requests.append(asyncio.create_task(ingest(n)))
                n += 1
                await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            await asyncio.gather(*requests)
            await asyncio.sleep(3.0)  # let deliveries drain
            server_cpu = sum(process_cpu_seconds(pid) for pid in pids) - cpu_before
            # what the measuring side itself took of the machine's cores (subscribers and load generator)
            client_cpu = process_cpu_seconds(process.pid) + _own_cpu_seconds() - client_cpu_before
            peak_rss_mb = server.peak_rss_mb()
            stop.set()
            await asyncio.to_thread(process.join, 60)
        arrivals = await asyncio.to_thread(_read_arrivals, out_path)
    latencies = sorted((at - sent[log_id]) * 1000 for log_id, at in arrivals if log_id in sent)
    from_request = sorted((at - sent_start[log_id]) * 1000 for log_id, at in arrivals if log_id in sent)
    print(
        json.dumps(
            {
                "benchmark": "alerts_fanout",
                "subscribers": args.subscribers,
                "api_processes": args.nodes,
                "alerts_sent": len(sent),
                "achieved_rate_per_s": round(len(sent) / args.seconds, 1),
                "deliveries": len(latencies),
                "deliveries_expected": len(sent) * args.subscribers,
                "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                "p99_ms": _percentile(latencies, 0.99),
                "max_ms": round(latencies[-1], 1) if latencies else None,
                "from_request_start_p50_ms": round(statistics.median(from_request), 1) if from_request else None,
                "from_request_start_p99_ms": _percentile(from_request, 0.99),
                "server_cpu_ms_per_alert": round(server_cpu * 1000 / max(1, len(sent)), 2),
                "server_cpu_cores_used": round(server_cpu / (args.seconds + 3.0), 2),
                "server_peak_rss_mb": peak_rss_mb,
                "client_cpu_cores_used": round(client_cpu / (args.seconds + 3.0), 2),
                "cpus": os.cpu_count(),
                "target_p99_ms": 100,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
