"""`agentrail serve | worker | migrate | seal | verify | print-schema | permissions | rest-endpoints`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from app.runtime.logging import configure_logging
from app.settings import ConfigurationError, Settings

log = structlog.get_logger("agentrail")


@contextlib.contextmanager
def server_urls(settings: Settings) -> Iterator[tuple[str, str]]:
    """The database and Redis URLs: from the settings, or from embedded servers started here.

    Embedded servers are stopped when the block exits, however it exits.
    """
    if settings.database_url and settings.redis_url:
        yield settings.database_url, settings.redis_url
        return
    if settings.is_production:
        raise ConfigurationError("DATABASE_URL and REDIS_URL must be set in production")
    from app.runtime.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir = Path(settings.data_dir).resolve()
    postgres = EmbeddedPostgres(data_dir) if not settings.database_url else None
    redis = EmbeddedRedis(data_dir) if not settings.redis_url else None
    try:
        database_url = postgres.start() if postgres else settings.database_url
        redis_url = redis.start() if redis else settings.redis_url
        assert database_url and redis_url
        yield database_url, redis_url
    finally:
        # a second Ctrl-C while the servers shut down must not leave them half-stopped
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir", "otlp_grpc_port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_worker", False):
        overrides["run_worker"] = False
    return Settings(**overrides)


def _banner(settings: Settings, url: str, embedded: bool) -> str:
    lines = [
        "",
        f"  Agentrail is running at {url}",
        f"  GraphQL endpoint: {url}/graphql" + ("  (open it in a browser for the IDE)" if settings.graphql_ide else ""),
        f"  Health: {url}/readyz   Metrics: {url}/metrics",
    ]
    if embedded:
        lines.append(f"  Data (embedded PostgreSQL and Redis): {Path(settings.data_dir).resolve()}")
    lines += [
        "",
        "  Create the first account:",
        f"    curl -s {url}/graphql -H 'content-type: application/json' -d '{{\"query\": "
        '"mutation { register(email: \\"you@example.com\\", password: \\"choose-a-long-one\\", '
        'name: \\"You\\", organizationName: \\"Acme\\") { accessToken } }"}\'',
        "",
        "  Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


async def _serve(settings: Settings, database_url: str, redis_url: str, *, embedded: bool) -> None:
    import uvicorn

    from app.main import create_app
    from app.runtime import migrations
    from app.runtime.connections import protocols
    from app.runtime.resources import Runtime
    from app.runtime.secrets import resolve_secret_key
    from workers.settings import run_worker

    await migrations.upgrade(database_url)
    runtime = await Runtime.connect(
        settings, database_url=database_url, redis_url=redis_url, secret_key=resolve_secret_key(settings)
    )
    app = create_app(settings, runtime=runtime)
    _tune_garbage_collector()
    http_protocol, ws_protocol = protocols(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=settings.max_ws_message_bytes,
        # read timeouts and a cap per client address (app/runtime/connections.py); the WebSocket protocol is
        # the live fan-out's, which writes shared frames (app/runtime/websocket.py)
        http=http_protocol,
        ws=ws_protocol,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        lifespan="on",
        access_log=False,
        # uvicorn would trust X-Forwarded-For from loopback (FORWARDED_ALLOW_IPS); the app honours proxy
        # headers from AGENTRAIL_TRUSTED_PROXIES only
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)

    worker_task = None
    if settings.run_worker:
        worker_task = asyncio.create_task(run_worker(runtime), name="arq-worker")
    grpc_server = None
    try:
        if settings.otlp_grpc_port is not None:
            from app.api.otlp_grpc import start_server

            grpc_server, grpc_port = await start_server(
                runtime, settings, host=settings.host, port=settings.otlp_grpc_port
            )
            print(f"  OTLP/gRPC receiver on {settings.host}:{grpc_port}", flush=True)
        serve_task = asyncio.create_task(server.serve(), name="uvicorn")
        while not server.started and not serve_task.done():  # noqa: ASYNC110 uvicorn exposes a flag only
            await asyncio.sleep(0.02)
        if server.started:
            print(_banner(settings, f"http://{settings.host}:{settings.port}", embedded), flush=True)
        await serve_task
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        if worker_task is not None:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
        await runtime.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _tune_garbage_collector() -> None:
    """A full collection of a warm API process takes ~20 ms and, with the default thresholds, lands on about
    one request in a hundred (measured: single logEvent p99 28 ms with them, 14 ms with these). Objects alive
    at startup are frozen out of the scans and full collections run a hundred times less often; young ones
    stay small and cheap (raising the first threshold made each of them slower, p99 44 ms)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1_000)


try:
    import uvicorn as _uvicorn

    class _Server(_uvicorn.Server):
        """uvicorn.Server whose signals we own: uvicorn would re-raise them after shutdown, which would
        kill the process before the embedded servers are stopped."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def request_exit(self) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

except ImportError:  # pragma: no cover
    pass


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    configure_logging(settings)
    settings.check_production()
    embedded = not (settings.database_url and settings.redis_url)
    # SIGTERM before the loop runs (e.g. while PostgreSQL starts) must still unwind through `finally`
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with server_urls(settings) as (database_url, redis_url):
            asyncio.run(_serve(settings, database_url, redis_url, embedded=embedded))
    except KeyboardInterrupt:
        pass
    log.info("stopped")
    return 0


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    configure_logging(settings)
    settings.check_production()
    from app.runtime.resources import Runtime
    from app.runtime.secrets import resolve_secret_key
    from workers.settings import run_worker

    async def main(database_url: str, redis_url: str) -> None:
        runtime = await Runtime.connect(
            settings, database_url=database_url, redis_url=redis_url, secret_key=resolve_secret_key(settings)
        )
        task = asyncio.create_task(run_worker(runtime))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await runtime.close()

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with server_urls(settings) as (database_url, redis_url):
            asyncio.run(main(database_url, redis_url))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    configure_logging(settings)
    from app.runtime import migrations

    with server_urls(settings) as (database_url, _redis_url):
        if args.action == "upgrade":
            asyncio.run(migrations.upgrade(database_url, args.revision or "head"))
        elif args.action == "downgrade":
            if not args.revision:
                print("downgrade needs a revision (e.g. -1 or base)", file=sys.stderr)
                return 2
            asyncio.run(migrations.downgrade(database_url, args.revision))
        current = asyncio.run(migrations.current(database_url))
        print(f"current revision: {current or 'none'} (head: {migrations.head()})")
    return 0


def _with_database(args: argparse.Namespace, action: Any) -> Any:
    """Runs `action(db, keys)` against the configured (or embedded) database (keys: app.audit.sealing.Keys,
    the service secret and the audit signing key); `action.redis`, when the action asks for it, is set to a
    client of the configured Redis first."""
    settings = _settings_from(args)
    configure_logging(settings)
    import app.models  # noqa: F401  every table known before the first session, so foreign keys resolve
    from app.audit.sealing import Keys
    from app.db import Database
    from app.integrity import Signer
    from app.runtime.secrets import resolve_secret_key, resolve_signing_key

    async def main(database_url: str) -> Any:
        db = Database(database_url, pool_size=2, max_overflow=0)
        redis = None
        if getattr(action, "wants_redis", False):
            from app.runtime.redis import create_redis

            redis = action.redis = create_redis(redis_url)
        try:
            return await action(db, Keys(resolve_secret_key(settings), Signer(resolve_signing_key(settings))))
        finally:
            await db.dispose()
            if redis is not None:
                await redis.aclose()

    with server_urls(settings) as (database_url, redis_url):
        return asyncio.run(main(database_url))


def cmd_seal(args: argparse.Namespace) -> int:
    from app.audit import sealing
    from app.audit.streams import STREAMS

    written = _with_database(args, lambda db, keys: sealing.seal_all(db, keys.signer, streams=STREAMS))
    print(json.dumps({"digestsWritten": written}))
    return 0


def cmd_rotate_signing_key(args: argparse.Namespace) -> int:
    """A new audit signing key in the data folder; the old key endorses it and it vouches for the old one."""
    from app.audit import signing
    from app.integrity import Signer
    from app.runtime.secrets import resolve_signing_key, rotate_signing_key_file

    settings = _settings_from(args)
    if settings.audit_signing_key is not None:
        print(
            "the signing key comes from AGENTRAIL_AUDIT_SIGNING_KEY: set a new one there (it is registered on the next"
            " seal)",
            file=sys.stderr,
        )
        return 2
    old = Signer(resolve_signing_key(settings))

    async def rotate(db: Any, _keys: Any) -> str:
        await signing.register(db, old)  # the old key is the current one, registered, before it is replaced
        rotate_signing_key_file(settings)
        new = Signer(resolve_signing_key(settings))
        await signing.register(db, new, previous=old)
        return new.key_id

    key_id = _with_database(args, rotate)
    print(json.dumps({"previousKeyId": old.key_id, "keyId": key_id}))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verifies every organisation (or one), its audit and its activity trail: one JSON line each (`trail`);
    exit 1 when any is broken."""
    from app.audit import published, sealing
    from app.audit.streams import STREAMS

    async def run(db: Any, keys: Any) -> list[dict[str, Any]]:
        from sqlalchemy import text

        async with db.system_session() as session:
            orgs = (
                [args.org]
                if args.org
                else list((await session.execute(text("SELECT id FROM organizations ORDER BY id"))).scalars())
            )
        reports = []
        for org_id in orgs:
            async with db.tenant_session(org_id) as session:
                for stream in STREAMS:
                    floor = await published.floor(run.redis, org_id, stream.name)  # type: ignore[attr-defined]
                    outcome = await sealing.verify(
                        session, keys, occurred_from=args.from_, occurred_to=args.to, published=floor, stream=stream
                    )
                    fields = {_camel(k): v for k, v in outcome.report().items()}
                    reports.append({"organizationId": org_id, "trail": stream.name, **fields})
        return reports

    run.wants_redis = True  # type: ignore[attr-defined]
    reports = _with_database(args, run)
    for report in reports:
        print(json.dumps(report))
    return 0 if all(r["ok"] for r in reports) else 1


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _datetime_arg(value: str) -> Any:
    from datetime import UTC, datetime

    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_print_schema(_args: argparse.Namespace) -> int:
    from app.api.schema import print_sdl

    sys.stdout.write(print_sdl())
    return 0


def cmd_permissions(_args: argparse.Namespace) -> int:
    from app.api.permissions import matrix

    sys.stdout.write(matrix())
    return 0


def cmd_rest_endpoints(_args: argparse.Namespace) -> int:
    from app.main import domain_routes
    from app.rest.openapi import endpoints_table

    sys.stdout.write(endpoints_table(domain_routes()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentrail", description="Agentrail: audit trail for AI agents")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=None, help="data folder (env AGENTRAIL_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the API (and, by default, the worker)")
    serve.add_argument("--host", default=None, help="bind address (env AGENTRAIL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (env AGENTRAIL_PORT, default 8000)")
    serve.add_argument("--no-worker", action="store_true", help="do not run the arq worker in this process")
    serve.add_argument(
        "--otlp-grpc-port",
        type=int,
        default=None,
        help="also receive OTLP over gRPC on this port (4317 is the collectors' default; env AGENTRAIL_OTLP_GRPC_PORT; "
        "default off)",
    )
    common(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run the arq worker alone")
    common(worker)
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="database migrations")
    migrate.add_argument("action", choices=["upgrade", "downgrade", "current"])
    migrate.add_argument("revision", nargs="?", default=None)
    common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    seal = sub.add_parser("seal", help="seal unsealed audit records into signed digests now")
    common(seal)
    seal.set_defaults(func=cmd_seal)

    rotate = sub.add_parser(
        "rotate-signing-key", help="replace the audit signing key in the data folder (the old one endorses the new)"
    )
    common(rotate)
    rotate.set_defaults(func=cmd_rotate_signing_key)

    verify = sub.add_parser("verify", help="verify the audit trail (checksums, Merkle roots, digest chain)")
    verify.add_argument("--org", default=None, help="one organisation id (default: all)")
    verify.add_argument("--from", dest="from_", type=_datetime_arg, default=None, help="records from (ISO 8601)")
    verify.add_argument("--to", type=_datetime_arg, default=None, help="records before (ISO 8601)")
    common(verify)
    verify.set_defaults(func=cmd_verify)

    schema = sub.add_parser("print-schema", help="print the GraphQL SDL")
    schema.set_defaults(func=cmd_print_schema)

    permissions = sub.add_parser("permissions", help="print the permission matrix (Markdown) from the declarations")
    permissions.set_defaults(func=cmd_permissions)
    rest = sub.add_parser("rest-endpoints", help="print the REST endpoint table (Markdown) from the routes")
    rest.set_defaults(func=cmd_rest_endpoints)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
