"""Issue 20.6: the email outbox. Rows first, sent by the worker with aiosmtplib to a local aiosmtpd server;
retried while the server is down or says 4xx, FAILED on 5xx, never sent twice after a worker stops mid-way."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.mail import service
from app.mail.smtp import FolderTransport, SMTPTransport, transport_for
from app.unit_of_work import system_unit_of_work
from workers.settings import run_worker

VALUES = {"email": "ann@example.com", "link": "http://x/verify?token=secret-token", "expires": "tomorrow"}


async def _enqueue(runtime, n: int = 1, template: str = "verification") -> list[str]:
    async with system_unit_of_work(runtime) as session:
        rows = [
            service.enqueue(
                session, to=f"user{i}@example.com", template=template, values=VALUES, settings=runtime.settings
            )
            for i in range(n)
        ]
        ids = [r.id for r in rows]
    return ids


async def _rows(runtime) -> list[sa.Row]:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM email_outbox ORDER BY to_address"))
        return list(result.all())


async def test_an_email_is_sent_once_and_its_body_cleared(runtime, smtp_server):
    await _enqueue(runtime, 3)
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)
    assert (report.claimed, report.sent) == (3, 3)
    received = smtp_server.inbox.messages
    assert sorted(m["To"] for m in received) == [f"user{i}@example.com" for i in range(3)]
    assert received[0]["Subject"] == "Confirm your email address for Agentrail"
    assert "secret-token" in received[0].get_payload()[0].get_payload(decode=True).decode()
    rows = await _rows(runtime)
    assert {r.status for r in rows} == {"SENT"} and all(r.body_text is None and r.sent_at for r in rows)
    assert {m["Message-ID"] for m in received} == {r.message_id for r in rows}
    again = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)
    assert again.claimed == 0 and len(received) == 3


async def test_the_server_down_is_retried_and_nothing_is_lost(runtime, smtp_server):
    await _enqueue(runtime, 2)
    smtp_server.stop()
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)
    assert (report.sent, report.retried) == (0, 2) and "could not reach" in report.errors[0]
    rows = await _rows(runtime)
    assert {r.status for r in rows} == {"PENDING"} and all(r.attempt_count == 1 for r in rows)
    assert all(r.next_attempt_at > utcnow() + timedelta(seconds=20) for r in rows)
    # not due yet: nothing claimed
    smtp_server.start()
    assert (await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)).claimed == 0
    later = utcnow() + timedelta(minutes=1)
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings, now=later)
    assert report.sent == 2 and len(smtp_server.inbox.messages) == 2


async def test_4xx_is_retried_and_5xx_fails(runtime, smtp_server):
    await _enqueue(runtime, 1)
    smtp_server.inbox.refuse = "451 try again later"
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)
    assert report.retried == 1 and (await _rows(runtime))[0].status == "PENDING"
    smtp_server.inbox.refuse = "550 no such user"
    later = utcnow() + timedelta(minutes=1)
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings, now=later)
    row = (await _rows(runtime))[0]
    assert report.failed == 1 and row.status == "FAILED" and "550" in row.last_error and row.body_text is None
    assert smtp_server.inbox.messages == []


async def test_attempts_run_out(runtime, smtp_server, monkeypatch):
    monkeypatch.setattr(runtime.settings, "mail_max_attempts", 2)
    await _enqueue(runtime, 1)
    smtp_server.stop()
    now = utcnow()
    for step in range(3):
        await service.send_due(
            runtime.db, SMTPTransport(runtime.settings), runtime.settings, now=now + timedelta(hours=step)
        )
    row = (await _rows(runtime))[0]
    assert row.status == "FAILED" and row.attempt_count == 2


async def test_a_worker_that_stopped_mid_way_never_sends_twice(runtime, smtp_server):
    """Claimed but not handed over (the worker died before): sent when the lease expires. Being handed over when
    the worker died (the server may have it): UNCERTAIN, never sent again."""
    ids = await _enqueue(runtime, 2)
    past = utcnow() - timedelta(minutes=10)
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE email_outbox SET status = :s, claim_token = 't', lease_expires_at = :at, attempt_count = 1"
                " WHERE id = :id"
            ),
            [{"s": "CLAIMED", "at": past, "id": ids[0]}, {"s": "SENDING", "at": past, "id": ids[1]}],
        )
    report = await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)
    assert (report.sent, report.uncertain) == (1, 1)
    assert [m["To"] for m in smtp_server.inbox.messages] == ["user0@example.com"]
    rows = {r.id: r for r in await _rows(runtime)}
    assert rows[ids[0]].status == "SENT" and rows[ids[1]].status == "UNCERTAIN"
    assert (await service.send_due(runtime.db, SMTPTransport(runtime.settings), runtime.settings)).claimed == 0


async def test_a_rolled_back_operation_sends_nothing(runtime, smtp_server):
    with pytest.raises(RuntimeError):
        async with system_unit_of_work(runtime) as session:
            service.enqueue(session, to="x@example.com", template="verification", values=VALUES)
            raise RuntimeError("the operation failed")
    assert await _rows(runtime) == []


async def test_the_worker_sends_after_the_commit(runtime, smtp_server):
    await _enqueue(runtime, 2, template="password_reset")
    await asyncio.wait_for(run_worker(runtime, burst=True), 60)
    assert len(smtp_server.inbox.messages) == 2
    assert {r.status for r in await _rows(runtime)} == {"SENT"}


async def test_development_mail_goes_to_a_folder(runtime, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime.settings, "smtp_host", None)
    monkeypatch.setattr(runtime.settings, "mail_dir", tmp_path)
    assert isinstance(transport_for(runtime.settings), FolderTransport)
    await _enqueue(runtime, 1)
    report = await service.send_due(runtime.db, transport_for(runtime.settings), runtime.settings)
    assert report.sent == 1
    files = list(tmp_path.glob("*.eml"))
    assert len(files) == 1 and b"secret-token" in files[0].read_bytes()
    assert "secret-token" in capsys.readouterr().out
    monkeypatch.setattr(runtime.settings, "env", "production")
    assert transport_for(runtime.settings) is None


def test_template_values_are_escaped_in_html():
    from app.mail.templates import render

    out = render(
        "invitation",
        {"inviter": "<script>", "organization": "A\r\nBcc: x", "role": "member", "link": "http://x", "expires": "soon"},
    )
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "\n" not in out.subject and "\r" not in out.subject
