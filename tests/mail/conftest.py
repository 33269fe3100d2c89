"""A local SMTP server (aiosmtpd) that keeps what it received and can be told to refuse."""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from support import free_port


class Inbox:
    """aiosmtpd handler: stores each message; `refuse` answers every RCPT with that reply instead."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


class SMTPServer:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_server(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SMTPServer]:
    """Started, and the runtime's settings pointed at it (plain SMTP on loopback)."""
    server = SMTPServer()
    server.start()
    monkeypatch.setattr(runtime.settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(runtime.settings, "smtp_port", server.port)
    monkeypatch.setattr(runtime.settings, "smtp_tls", "none")
    yield server
    server.stop()
