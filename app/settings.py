"""The one settings object. Environment prefix AGENTRAIL_, plus DATABASE_URL and REDIS_URL."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """Raised when the settings are not safe or not complete enough to start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTRAIL_", env_file=None, extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    otlp_grpc_port: int | None = None  # OTLP over gRPC (app/api/otlp_grpc.py) in `serve`; off unless set
    data_dir: Path = Path(".agentrail")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "AGENTRAIL_DATABASE_URL")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "AGENTRAIL_REDIS_URL"))
    db_pool_size: int = 10
    db_max_overflow: int = 10

    # tokens
    secret_key: SecretStr | None = None
    # the Ed25519 key that signs audit digests: base64 of its 32-byte seed, or a PKCS#8 PEM; when unset, the
    # file `audit_signing_key` in the data folder (generated once, mode 0600). Never logged.
    audit_signing_key: SecretStr | None = None
    access_token_minutes: int = 15
    jwt_issuer: str = "agentrail"
    # sign-in sessions (app/orgs/sessions.py): rotating refresh tokens, in the body or in an httpOnly cookie
    refresh_token_days: int = 30
    auth_cookie_secure: bool | None = None  # None: Secure in production only (the dev server is plain HTTP)
    auth_cookie_samesite: Literal["strict", "lax"] = "strict"
    invitation_days: int = 7
    password_reset_minutes: int = 60
    email_verification_hours: int = 48

    # GraphQL
    graphql_ide: bool = True
    max_query_depth: int = 12
    max_query_tokens: int = 5000
    max_query_aliases: int = 30
    max_request_bytes: int = 10 * 1024 * 1024
    max_ws_message_bytes: int = 1024 * 1024
    max_subscriptions_per_connection: int = 50
    # graphql-transport-ws `ping` sent to every acknowledged connection this often (0: never), so that proxies
    # in between do not cut idle subscribers; clients answer `pong`
    ws_ping_interval_seconds: float = 15.0
    # query cost (app/api/cost.py, README "Query cost"): nodes an operation can return, weighted; the most one
    # operation may cost, and each API key's and user's budget of points (a leaky bucket in Redis)
    max_query_cost: int = 100_000
    query_cost_budget: int = 200_000
    query_cost_refill_per_second: float = 200.0  # 720,000 an hour (GitHub: 500,000 nodes an hour)
    max_response_bytes: int = 32 * 1024 * 1024  # a GraphQL result larger than this is refused, not sent
    statement_timeout_ms: int = 15_000  # every statement of a request; jobs set their own (job_statement_timeout_ms)
    job_statement_timeout_ms: int = 0  # 0: none (exports and sealing scan much; their leases bound them)
    # HTTP connections (uvicorn + app/runtime/connections.py)
    http_header_timeout_seconds: float = 10.0  # from the connection (or the previous response) to the end of headers
    http_body_timeout_seconds: float = 30.0  # to receive the whole request body
    http_keep_alive_seconds: int = 5
    max_connections_per_client: int = 64  # open connections from one client address (0: no cap)
    # a caller over its request rate or query cost budget gets its RATE_LIMITED answer after its retryAfter, at
    # most this long (0: at once): with the per-address connection cap, a loop of refusals is bounded too
    rate_limit_hold_max_seconds: float = 5.0
    subscriber_queue_size: int = 1000  # live messages buffered per subscriber before it is dropped as too slow
    subscriber_max_buffered_bytes: int = 4 * 1024 * 1024  # unsent bytes on a live connection before it is too slow
    live_flush_interval_ms: float = 20.0  # under load, live messages to one connection are written together

    # ingest
    max_batch_records: int = 1000
    export_sync_max_rows: int = 10_000  # above it, GET …/export answers 202 with an export job
    api_url: str | None = None  # the API's public base URL, for download links; default http://host:port
    download_link_minutes: int = 60  # how long a signed download link stays valid
    # reports (app/reports): window limit, retention of the file, when a RUNNING build counts as dead
    report_max_window_days: int = 366
    report_retention_days: int = 30
    report_timeout_seconds: int = 900
    report_max_attempts: int = 3
    report_max_bytes: int = 50 * 1024 * 1024
    # file storage (app/files/store.py): exports and reports in PostgreSQL chunks, or, with a bucket, one
    # object each in an S3-compatible store (AWS S3, MinIO, R2, …); stored_files in PostgreSQL stays the index.
    # Credentials: these two, or else boto3's standard chain (AWS_* variables, shared files, instance role).
    files_s3_bucket: str | None = None
    files_s3_endpoint_url: str | None = None  # for S3-compatible stores; None = AWS
    files_s3_region: str | None = None
    files_s3_prefix: str = ""  # object keys are {prefix}{org_id}/{file_id}
    files_s3_access_key_id: SecretStr | None = None
    files_s3_secret_access_key: SecretStr | None = None
    files_s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"  # "path" for most MinIO setups
    files_s3_part_size: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    files_s3_max_concurrency: int = Field(default=16, ge=1)  # S3 calls in flight per process (threads)
    # audit record retention (app/audit/retention.py): a decrease (downgrade, a shorter override) waits this long
    # before records go; removal runs in batches of this many records, one short transaction each
    retention_grace_days: int = Field(default=14, ge=0, le=365)
    retention_batch_size: int = Field(default=2000, ge=100, le=100_000)
    # the share of time removal works: after each batch it waits (1/duty - 1) times as long as the batch took,
    # so that ingest keeps the CPU and I/O (bench/retention.py: ingest during a run vs alone)
    retention_duty: float = Field(default=0.2, gt=0, le=1)
    # asynchronous exports
    export_retention_hours: int = 168  # a finished export's file is kept (and downloadable) this long
    export_batch_rows: int = 2000  # rows fetched from the server-side cursor per batch
    export_parquet_row_group_rows: int = 20_000  # rows per Parquet row group (buffered in memory until written)
    export_heartbeat_timeout_seconds: int = 60  # a RUNNING job silent this long is taken over by another worker
    export_progress_interval_seconds: float = 1.0  # at most one live progress update per job this often
    export_max_attempts: int = 5  # attempts (worker deaths) before a job is given up as FAILED

    # abuse protection
    login_max_failures: int = 5  # failed sign-ins per client address within the window
    login_max_failures_per_account: int = 10  # per account (email), whatever the addresses they come from
    login_failure_window_seconds: int = 900
    # addresses (or CIDR ranges, or "*") of the reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are
    # believed; empty: none, the connecting address is the client's (anyone could forge the headers)
    trusted_proxies: str = ""

    # billing (Stripe); without the secret key, webhook secret and both prices billing is "not configured"
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_price_pro: str | None = None
    stripe_price_business: str | None = None
    stripe_api_base: str | None = None  # tests point the stripe library at a local server
    stripe_webhook_tolerance_seconds: int = 300
    public_url: str | None = None  # where the dashboard lives: Checkout/Portal return URLs; default http://host:port
    # plan limits (quota, API keys, rate limits): None = enforced exactly when billing is configured
    enforce_limits: bool | None = None
    plan_limits: dict[str, dict[str, int | float | None]] = {}  # overrides, e.g. {"free": {"records_per_month": 50000}}
    user_requests_per_second: float = 20.0  # per signed-in user, whatever the plan
    rate_limit_burst_seconds: float = 2.0  # a caller may burst this many seconds' worth of requests

    # webhooks (app/webhooks): delivery timeout, retry schedule (seconds; 3 retries, then dead-lettered),
    # jitter (a fraction added to each delay), auto-disable after continuous failure, and SSRF protection
    webhook_timeout_seconds: float = 10.0
    webhook_retry_delays: list[float] = [30.0, 300.0, 1800.0]
    webhook_retry_jitter: float = 0.1
    webhook_disable_after_days: float = 5.0
    webhook_secret_grace_hours: float = 24.0  # a rotated-out secret still signs for this long
    webhook_batch_size: int = 200  # deliveries one job claims and sends concurrently
    webhook_max_in_flight: int = 64  # requests a worker process has in flight at once (pools of 8 connections)
    webhook_allow_private_targets: bool = False  # self-hosted installs: allow loopback/private addresses

    # email (app/mail): an outbox in PostgreSQL sent by the worker over SMTP; without a host, development and
    # tests write each email to `mail_dir` (default data_dir/mail) and print it; production keeps them queued
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"  # tls: implicit TLS (port 465)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: str | None = None  # a private CA for the SMTP server's certificate
    smtp_timeout_seconds: float = 15.0
    mail_from: str = "Agentrail <no-reply@agentrail.local>"
    mail_dir: Path | None = None
    mail_batch_size: int = 50  # emails one job claims and sends over one connection
    mail_max_attempts: int = 10  # then FAILED (retries back off from 30 s to an hour)

    # single sign-on (app/sso): OpenID Connect per organisation; requests to providers pass the SSRF guard
    sso_allow_loopback: bool = False  # development and tests only (ignored in production): a local provider
    sso_http_timeout_seconds: float = 10.0
    sso_redirect_url: str | None = None  # the dashboard page that hands code and state to completeSso
    sso_domain_verification_url: str = "https://{domain}/.well-known/agentrail-domain-verification.txt"
    sso_login_minutes: int = 10

    # in-process worker for `agentrail serve` (production runs `agentrail worker` separately)
    run_worker: bool = True
    # every worker beats this often while it polls the queue; /readyz answers 503 ("worker") when no worker has
    # beaten within worker_stale_seconds
    worker_heartbeat_seconds: float = 5.0
    worker_stale_seconds: float = 30.0
    # how often each API process re-checks the credentials of its open subscriptions against PostgreSQL (revocations
    # also arrive at once through Redis; token expiry is checked every second)
    credential_recheck_seconds: float = 10.0

    log_level: str = "INFO"
    log_json: bool | None = None

    @model_validator(mode="after")
    def _normalise(self) -> Settings:
        if (self.files_s3_access_key_id is None) != (self.files_s3_secret_access_key is None):
            raise ConfigurationError(
                "set both AGENTRAIL_FILES_S3_ACCESS_KEY_ID and AGENTRAIL_FILES_S3_SECRET_ACCESS_KEY, or neither"
            )
        if self.log_json is None:
            self.log_json = self.env == "production"
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def embedded(self) -> bool:
        """True when neither server is configured: `serve` then starts its own."""
        return self.database_url is None and self.redis_url is None

    def check_production(self) -> None:
        """Refuse unsafe production configurations before anything starts."""
        if not self.is_production:
            return
        problems = []
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 32:
            problems.append("AGENTRAIL_SECRET_KEY must be set to at least 32 characters")
        if self.graphql_ide:
            problems.append("AGENTRAIL_GRAPHQL_IDE must be false")
        if self.database_url is None or self.redis_url is None:
            problems.append("DATABASE_URL and REDIS_URL must be set (no embedded servers in production)")
        if problems:
            raise ConfigurationError("refusing to start in production: " + "; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    return Settings()
