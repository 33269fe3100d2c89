"""Engine, sessions, tenant scoping and shared column helpers.

Tenancy lives here, in one place: every session is opened either for one organisation
(`tenant_session(org_id)`) or explicitly unscoped (`system_session()`, for logins and key lookups).
For a tenant session every ORM SELECT, UPDATE and DELETE on a table that has `org_id` gets
`org_id = :org` added automatically, and every new row is stamped with (or checked against) the
session's organisation. A session that declared neither refuses to touch tenant tables at all.
Raw SQL cannot be scoped that way, so a tenant session refuses it unless it is marked: `scoped_text`
(its own `org_id = :org`, with `:org` bound from the session) or `global_text` (reveals nothing of any one
organisation). Driver-level SQL is refused outright.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as SQLAlchemyAsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelAsyncSession

TENANT_KEY = "org_id"
SYSTEM = "__system__"
# execution options: how a text statement declares its tenancy, and the scope of the session that opened
# a connection (set when its transaction begins, so raw SQL on that connection is checked against it)
_SQL_TENANCY = "agentrail_sql_tenancy"
_CONNECTION_ORG = "agentrail_org"
_ORG_PARAMETER = re.compile(r"(?<![:\w]):org\b")


# base32 (RFC 4648) → lower-case Crockford, the ULID alphabet
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


_last_id = [0]  # the last ULID made here, as an integer: ids made in one millisecond keep their order


def new_id(prefix: str) -> str:
    """Prefixed, time-ordered id: `org_01jd…` (a ULID: 48 bits of milliseconds, 80 random bits, lower-case
    Crockford base32). Monotonic within the process, as the ULID spec's monotonic generator: within one
    millisecond the next id is the last one plus one, so rows made in one go sort by id in the order they
    were made. Encoded with the standard library's base32 (in C): ingest makes one per record."""
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    if value >> 80 <= _last_id[0] >> 80:  # same millisecond (or the clock stepped back)
        value = _last_id[0] + 1
    _last_id[0] = value
    # 20 bytes = 32 base32 digits, of which the last 26 hold the 128 bits (the first 6 are zeros)
    return f"{prefix}_{base64.b32encode(value.to_bytes(20)).translate(_CROCKFORD)[6:].decode()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with `Z`, millisecond precision."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def within(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    """Conditions for a half-open time window [start, end); either bound may be open."""
    conditions = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column < end)
    return conditions


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """timestamptz read as an aware UTC datetime, always. asyncpg reads PostgreSQL's -infinity and infinity as
    naive datetime.min and datetime.max; a legacy row holding one would otherwise break every comparison with
    aware values (sealing, rollups, the API's formatting)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def timestamp_column(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, **kwargs)


def optional_timestamp_column(**kwargs: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=True, **kwargs)


def json_column(**kwargs: Any) -> Any:
    from sqlalchemy.dialects.postgresql import JSONB

    return Field(default_factory=dict, sa_type=JSONB, nullable=False, **kwargs)


_HUGE = float(2**63)


def _maybe_lossy(value: Any) -> bool:
    """True if the value holds a float of magnitude 2**63 or more: orjson reads integers beyond 64 bits as such
    floats, so the text is read again by the standard library (a genuine float that large reads the same)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            if abs(item) >= _HUGE:
                return True
        elif kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


# an integer of 2**63 or more has at least 19 digits: without such a run of digits nothing can be lossy. Found
# by mapping every digit to "0" and looking for 19 of them: C-speed passes, ~10x faster than a regex
# search, which cost more than decoding the JSON itself (a 2 MB batch: 15 ms against 0.6 ms)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS = b"0" * 19


def _has_long_digits(text: str | bytes) -> bool:
    """True if `text` holds a run of 19 or more ASCII digits (UTF-8 encodes only ASCII digits as such)."""
    raw = text.encode() if isinstance(text, str) else text
    return _NINETEEN_ZEROS in raw.translate(_DIGITS_AS_ZERO)


def json_loads(text: str | bytes) -> Any:
    """jsonb values as read: orjson (several times faster on wide reads such as exports), the standard library
    where orjson would differ (integers beyond 64 bits, which it reads as floats) or refuses. Every value reads
    exactly as with `json.loads`."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if not _has_long_digits(text):
        return value
    return json.loads(text) if _maybe_lossy(value) else value


# the range in which a JSON number is stored by jsonb and read back (and answered by orjson) as the same value:
# integers of 64 bits; beyond it jsonb returns an integral float as a huge integer and precision is lost
MIN_JSON_NUMBER = -(2**63)
MAX_JSON_NUMBER = 2**64 - 1


class InvalidJSON(json.JSONDecodeError):
    """A request body that is not JSON we accept. A JSONDecodeError, so that the GraphQL WebSocket handler
    closes with 4400 as for any undecodable message; the message says what is wrong (never the payload)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.message = message

    def __str__(self) -> str:
        return self.message


def request_json(body: str | bytes) -> Any:
    """A request body's JSON, decoded one way on every path (REST, GraphQL over HTTP and WebSocket): UTF-8,
    nesting bounded (orjson refuses past 1,024 levels, before any recursion here), no NaN or Infinity,
    integers kept exactly, no NUL characters (PostgreSQL stores none). Raises InvalidJSON."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc.msg}") from None
    if _has_long_digits(body) and _maybe_lossy(value):
        try:
            value = json.loads(body)  # integers beyond 64 bits exactly (orjson read them as floats)
        except (ValueError, RecursionError):
            raise InvalidJSON("the body is not valid JSON") from None
    nul = b"\\u0000" if isinstance(body, bytes) else "\\u0000"
    if nul in body and _contains_nul(value):  # type: ignore[operator]
        raise InvalidJSON("JSON strings must not contain NUL characters (\\u0000)")
    return value


def _contains_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def json_value_problem(value: Any) -> str | None:
    """Why jsonb could not store `value` and give the same value back, or None: a NUL character in a key or
    string, a number outside the 64-bit range or not finite, a key that is not a string, a value that is not
    JSON. Iterative: hostile nesting cannot blow the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                return "must not contain NUL characters"
        elif kind is dict:
            for key in item:
                if type(key) is not str:
                    return "must have string keys"
                if "\x00" in key:
                    return "must not contain NUL characters"
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is int or kind is float:
            if kind is float and not math.isfinite(item):
                return "must not hold NaN or Infinity"
            # floats up to 2^63 only: a larger one reads back from jsonb as an integer that is not the float
            high = MAX_JSON_NUMBER if kind is int else -MIN_JSON_NUMBER - 1
            if not MIN_JSON_NUMBER <= item <= high:
                return "holds a number beyond the 64-bit range (-2^63 to 2^64-1); send it as a string"
        elif item is not None and kind is not bool:
            return "is not JSON"
    return None


class AsyncSession(SQLModelAsyncSession):
    """SQLModel's session (`exec` for model selects) with SQLAlchemy's `execute` for rows and core SQL,
    which SQLModel marks deprecated only to steer model queries towards `exec`."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await SQLAlchemyAsyncSession.execute(self, *args, **kwargs)


class TenantScoped:
    """Mixin marker for tables that belong to one organisation. They must have an `org_id` column."""

    if TYPE_CHECKING:  # declared for the type checker only: each table defines the column itself
        org_id: str | None


class TenancyError(RuntimeError):
    """A programming error: a tenant table was touched without a declared scope, or across scopes."""


def scoped_text(sql: str) -> sa.TextClause:
    """Raw SQL that limits itself to one organisation with `org_id = :org`. In a tenant session `:org` is
    the session's organisation (a caller naming another one gets TenancyError); a system session's caller
    names it."""
    if not _ORG_PARAMETER.search(sql):
        raise ValueError("a scoped statement limits itself with :org")
    return sa.text(sql).execution_options(**{_SQL_TENANCY: "scoped"})


def global_text(sql: str) -> sa.TextClause:
    """Raw SQL that reveals nothing of any one organisation (a setting, a global watermark): runs anywhere."""
    return sa.text(sql).execution_options(**{_SQL_TENANCY: "global"})


_LOCKS = {
    shared: scoped_text(f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(:ns, hashtext(:org || :part))")
    for shared in (False, True)
}


async def lock_organisation(session: Any, namespace: int, *, shared: bool = False, part: str = "") -> None:
    """A transaction-level advisory lock on (namespace, the session's organisation followed by `part`)."""
    await session.execute(_LOCKS[shared], {"ns": namespace, "part": part})


# the exclusive lock of `lock_organisation(namespace)` and the head of a chained stream ("audit": audit_logs,
# "activity": activity_events) in one round trip: the function reads the head after the lock is granted, in a
# statement of its own (migration 0027), so the head is the one the previous holder committed. No row: no head yet.
LOCKED_CHAIN_HEAD = scoped_text("SELECT chain_index, entry_hash FROM agentrail_locked_chain_head(:ns, :org, :stream)")


async def lock_chain_head(session: Any, namespace: int, stream: str) -> tuple[int, bytes] | None:
    """Locks the organisation's chain (until the commit) and returns its head (chain index, entry hash)."""
    row = (await session.execute(LOCKED_CHAIN_HEAD, {"ns": namespace, "stream": stream})).first()
    return None if row is None else (int(row[0]), bytes(row[1]))


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        echo: bool = False,
        statement_timeout_ms: int = 0,
    ) -> None:
        self.url = to_async_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            # no pre-ping (three round trips per checkout with asyncpg); a connection the server closed is
            # recognised locally on checkout instead (see _discard_closed_connections)
            pool_pre_ping=False,
            echo=echo,
            # a failed statement's text in logs and exceptions without its parameters: they hold user data
            hide_parameters=True,
            json_deserializer=json_loads,
            # a connection forgotten inside a transaction must not hold its locks forever; no statement of a
            # request runs longer than statement_timeout_ms (jobs set their own: see JOB_STATEMENT_TIMEOUT)
            connect_args={
                "server_settings": {
                    "idle_in_transaction_session_timeout": "60000",
                    "statement_timeout": str(max(0, statement_timeout_ms)),
                }
            },
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)
        event.listen(self.engine.sync_engine, "checkout", _discard_closed_connections)
        event.listen(self.engine.sync_engine, "before_execute", _scope_text, retval=True)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _refuse_driver_sql)

    def session(self, *, org_id: str | None) -> AsyncSession:
        """A session scoped to `org_id`, or to the system when `org_id` is `SYSTEM`."""
        session = self._sessions()
        session.info[TENANT_KEY] = org_id
        return session

    @asynccontextmanager
    async def tenant_session(self, org_id: str) -> AsyncIterator[AsyncSession]:
        if not org_id or org_id == SYSTEM:
            raise TenancyError("tenant_session needs a real organisation id")
        async with self.session(org_id=org_id) as session:
            yield session

    @asynccontextmanager
    async def system_session(self, *, autocommit: bool = False) -> AsyncIterator[AsyncSession]:
        """`autocommit`: each statement commits on its own, no BEGIN/ROLLBACK round trips (for the lookups
        that every request makes, such as finding the caller's API key)."""
        async with self.session(org_id=SYSTEM) as session:
            if autocommit:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


JOB_STATEMENT_TIMEOUT: ContextVar[int | None] = ContextVar("agentrail_job_statement_timeout", default=None)
"""Set (milliseconds, 0 = none) in a worker's task: each transaction it begins replaces the connection's
request-sized statement timeout with this one. Unset (requests): no extra round trip."""


@event.listens_for(Session, "after_begin")
def _job_statement_timeout(session: Session, transaction: Any, connection: Any) -> None:
    timeout = JOB_STATEMENT_TIMEOUT.get()
    if timeout is not None:
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout)}")


STATEMENT_TIMEOUT_SQLSTATE = "57014"  # query_canceled: statement_timeout (or a cancel request) stopped it


def is_statement_timeout(exc: BaseException | None) -> bool:
    while exc is not None:
        if getattr(exc, "sqlstate", None) == STATEMENT_TIMEOUT_SQLSTATE:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


def _discard_closed_connections(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # The server closed this pooled connection (restart, idle timeout, terminated backend): asyncpg knows
    # without a round trip. DisconnectionError makes the pool discard it and hand out a fresh one.
    if dbapi_connection.driver_connection.is_closed():
        raise sa.exc.DisconnectionError("connection closed by the server")


def to_async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as every tool prints them) and use asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def _tenant_classes() -> list[type]:
    return [mapper.class_ for mapper in SQLModel._sa_registry.mappers if issubclass(mapper.class_, TenantScoped)]


def session_org(session: Session | SQLAlchemyAsyncSession) -> str | None:
    return session.info.get(TENANT_KEY)


def tenant_org(session: Session | SQLAlchemyAsyncSession) -> str:
    """The organisation of a tenant session (for work that only a tenant session may do)."""
    org_id = session_org(session)
    if org_id is None or org_id == SYSTEM:
        raise TenancyError("this needs a tenant session")
    return org_id


@event.listens_for(Session, "do_orm_execute")
def _scope_orm_statements(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    org_id = session_org(state.session)
    if org_id == SYSTEM:
        return
    if org_id is None:
        if any(issubclass(m.class_, TenantScoped) for m in state.all_mappers):
            raise TenancyError("tenant table queried from a session without a declared organisation scope")
        return
    state.statement = tenant_scoped(state.statement, org_id)


def tenant_scoped(statement: Any, org_id: str) -> Any:
    """`statement` limited to one organisation's rows of every tenant table it reads. Added to every
    statement, not only those whose top level names a tenant table: the criteria also reach tenant tables
    inside subqueries, CTEs and joins. Applied to every ORM statement of a tenant session (above) and to
    the statements that run outside the ORM's execution (`app.runtime.copy_out`)."""
    if is_raw_sql(statement):
        return statement  # the ORM cannot look inside: _scope_text checks it when it runs
    for cls in _tenant_classes():
        statement = statement.options(with_loader_criteria(cls, lambda c: c.org_id == org_id, include_aliases=True))
    return statement


@event.listens_for(Session, "after_begin")
def _remember_connection_scope(session: Session, _transaction: Any, connection: Any) -> None:
    connection.execution_options(**{_CONNECTION_ORG: session_org(session)})


def _text_tenancy(statement: Any, options: Any) -> str | None:
    """None for a statement that is not raw SQL; else how it declared its tenancy ("" when it did not)."""
    if isinstance(statement, sa.TextClause):
        return options.get(_SQL_TENANCY, "")
    if isinstance(statement, sa.TextualSelect):  # text(...).columns(...): the mark may sit on either
        return options.get(_SQL_TENANCY) or statement.element.get_execution_options().get(_SQL_TENANCY, "")
    return None


def is_raw_sql(statement: Any) -> bool:
    return isinstance(statement, sa.TextClause | sa.TextualSelect)


def _scope_text(connection: Any, statement: Any, multiparams: Any, params: Any, options: Any) -> Any:
    """Raw SQL on a tenant session's connection runs only when marked, with `:org` bound to the session's
    organisation. Connections no session opened (migrations, health checks, tests' fixtures) are the system's."""
    tenancy = _text_tenancy(statement, options)
    org_id = options.get(_CONNECTION_ORG, SYSTEM)
    if tenancy is None or tenancy == "global" or (org_id == SYSTEM and not tenancy):
        return statement, multiparams, params
    if not tenancy:
        raise TenancyError("raw SQL in a tenant session: mark it scoped_text (limited by :org) or global_text")
    if org_id is None:
        raise TenancyError("scoped SQL in a session without a declared organisation scope")
    if multiparams:
        return statement, [_bind_org(p, org_id) for p in multiparams], params
    return statement, multiparams, _bind_org(params, org_id)


def _bind_org(params: Any, org_id: str) -> dict[str, Any]:
    named = params.get("org")
    if org_id == SYSTEM:
        if not named:
            raise TenancyError("scoped SQL in a system session names its organisation (:org)")
        return dict(params)
    if named is not None and named != org_id:
        raise TenancyError("scoped SQL names another organisation than its session's")
    return {**params, "org": org_id}


def _refuse_driver_sql(connection: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
    # exec_driver_sql: a plain string, past every construct a mark could sit on
    if context is not None and context.is_text and context.compiled is None:
        org_id = context.execution_options.get(_CONNECTION_ORG, SYSTEM)
        if org_id != SYSTEM and context.execution_options.get(_SQL_TENANCY) != "global":
            raise TenancyError("driver-level SQL in a tenant session")


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _flush_context: Any, _instances: Any) -> None:
    org_id = session_org(session)
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, TenantScoped):
            continue
        if org_id is None:
            raise TenancyError("tenant row written from a session without a declared organisation scope")
        if org_id == SYSTEM:
            if not obj.org_id:
                raise TenancyError("system session wrote a tenant row without org_id")
            continue
        current = obj.org_id
        if current is None:
            obj.org_id = org_id
        elif current != org_id:
            raise TenancyError("row belongs to another organisation")


__all__ = [
    "SYSTEM",
    "AsyncSession",
    "Database",
    "SQLModel",
    "TenancyError",
    "TenantScoped",
    "global_text",
    "iso",
    "json_column",
    "lock_organisation",
    "new_id",
    "optional_timestamp_column",
    "scoped_text",
    "session_org",
    "timestamp_column",
    "to_async_url",
    "utcnow",
    "within",
]
