"""Handing emails over: to an SMTP server with aiosmtplib, or, in development without one, to the console and
a local folder (one .eml file each) so that a new user sees the links."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import structlog

from app.mail.service import Deliver, Permanent, Temporary, Transport
from app.settings import Settings

log = structlog.get_logger(__name__)


class SMTPTransport(Transport):
    """One SMTP connection per batch. TLS: "tls" (implicit, port 465), "starttls" (required), or "none"."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> Deliver:
        s = self._settings
        context = ssl.create_default_context()
        if s.smtp_ca_file:
            context.load_verify_locations(s.smtp_ca_file)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            tls_context=context if s.smtp_tls != "none" else None,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_seconds,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Temporary(f"could not reach the SMTP server: {type(exc).__name__}: {exc}") from None
        self._client = client
        return self._deliver

    async def _deliver(self, message: EmailMessage) -> None:
        assert self._client is not None
        try:
            await self._client.send_message(message)
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise Permanent(f"refused by the SMTP server: {exc.code} {exc.message}") from None
            raise Temporary(f"the SMTP server said to try later: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise Permanent(f"recipient refused: {codes}") from None
            raise Temporary(f"recipient refused for now: {codes}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Temporary(f"the SMTP connection failed: {type(exc).__name__}") from None

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            try:
                await self._client.quit()
            except Exception:
                self._client.close()
            self._client = None


class FolderTransport(Transport):
    """Development: each email is written to `folder` as an .eml file and printed to the console."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def __aenter__(self) -> Deliver:
        self._folder.mkdir(parents=True, exist_ok=True)
        return self._deliver

    async def _deliver(self, message: EmailMessage) -> None:
        name = str(message["Message-ID"]).strip("<>").replace("/", "_").replace("@", "_at_")
        path = self._folder / f"{name}.eml"
        path.write_bytes(bytes(message))
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        # development only: the point is to show the link to whoever runs the server on their machine
        print(f"\n--- email to {message['To']}: {message['Subject']}\n{text}--- saved as {path}\n", flush=True)


def transport_for(settings: Settings) -> Transport | None:
    """SMTP when a host is configured; the folder in development and tests; None in production without SMTP
    (emails wait in the outbox, and the worker warns)."""
    if settings.smtp_host:
        return SMTPTransport(settings)
    if settings.env != "production":
        return FolderTransport(settings.mail_dir or settings.data_dir / "mail")
    return None
