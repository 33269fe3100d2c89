"""Issue 20.7: alert notification emails per member preferences (severities, immediate or a digest at most every N
minutes), a burst of 1,000 alerts is one email, the one-click unsubscribe link."""

from __future__ import annotations

import asyncio
import email
import re
from datetime import timedelta
from email import policy
from urllib.parse import urlsplit

import sqlalchemy as sa

from app.alerts import notify
from app.db import utcnow
from support import add_user, error_code, gql, register
from workers.settings import run_worker


async def _rules(client, account) -> None:
    for name, severity, pattern in (("Project codes", "HIGH", r"PRJ-\d{4}"), ("Chatter", "LOW", r"hello")):
        input_ = {
            "name": name,
            "kind": "PATTERN",
            "config": {"pattern": pattern},
            "severity": severity,
            "appliesTo": ["PROMPT"],
        }
        assert "errors" not in await gql(client, "CreateComplianceRule", {"input": input_}, token=account.token)


async def _burst(client, account, n: int, prompt: str = "see PRJ-1234") -> None:
    records = [{"action": "llm_call", "prompt": prompt} for _ in range(n)]
    result = await gql(client, "LogEvents", {"input": records}, token=account.token)
    assert "errors" not in result, result


async def _emails(runtime) -> list[sa.Row]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT * FROM email_outbox WHERE template = 'alert_notification' ORDER BY created_at")
        )
        return list(rows.all())


async def _want(client, token: str, **alert_emails) -> None:
    result = await gql(
        client, "UpdateProfile", {"input": {"notificationPreferences": {"alertEmails": alert_emails}}}, token=token
    )
    assert "errors" not in result, result


def _later(seconds: float):
    return utcnow() + timedelta(seconds=seconds)


async def test_a_burst_of_1000_alerts_is_one_email_for_each_member_who_wants_them(client, runtime, settings):
    owner = await register(client, org="Acme")
    await add_user(runtime, settings, owner, "member")
    await _rules(client, owner)
    await _want(client, owner.token, enabled=True, severities=["HIGH"], digestMinutes=0)
    await asyncio.sleep(0.01)  # alerts from now on
    await _burst(client, owner, 1000)
    await _burst(client, owner, 5, prompt="hello there")  # LOW: not wanted
    report = await notify.notify(runtime, owner.org_id, now=_later(5))
    assert (report.emails, report.alerts) == (1, 1000)
    emails = await _emails(runtime)
    assert len(emails) == 1 and emails[0].to_address == owner.email  # the member did not ask for any
    assert emails[0].subject == "[Agentrail] 1000 new alert(s) in Acme"
    assert "[HIGH] Project codes" in emails[0].body_text and "and 980 more" in emails[0].body_text
    assert "hello" not in emails[0].body_text
    # nothing new: nothing sent; a second burst within the minute waits, then goes as one
    assert (await notify.notify(runtime, owner.org_id, now=_later(6))).emails == 0
    await _burst(client, owner, 3)
    waiting = await notify.notify(runtime, owner.org_id, now=_later(20))
    assert waiting.emails == 0 and waiting.waiting == [owner.user_id]
    assert (await notify.notify(runtime, owner.org_id, now=_later(70))).alerts == 3
    assert len(await _emails(runtime)) == 2


async def test_a_digest_waits_its_minutes(client, runtime):
    owner = await register(client)
    await _rules(client, owner)
    await _want(client, owner.token, enabled=True, severities=["HIGH", "LOW"], digestMinutes=15)
    await asyncio.sleep(0.01)
    await _burst(client, owner, 2)
    assert (await notify.notify(runtime, owner.org_id, now=_later(5))).emails == 1
    await _burst(client, owner, 4, prompt="hello")
    for minutes in (1, 5, 14):
        assert (await notify.notify(runtime, owner.org_id, now=_later(minutes * 60))).emails == 0
    assert (await notify.notify(runtime, owner.org_id, now=_later(15 * 60 + 5))).alerts == 4


async def test_the_worker_sends_them_and_the_link_unsubscribes(client, runtime):
    owner = await register(client)
    await _rules(client, owner)
    await _want(client, owner.token, enabled=True)
    await asyncio.sleep(0.01)
    await _burst(client, owner, 3)
    await asyncio.sleep(notify.SETTLE_SECONDS + 0.1)
    await runtime.queue.enqueue_job("sweep_alert_notifications")
    await asyncio.wait_for(run_worker(runtime, burst=True), 60)
    emails = await _emails(runtime)
    assert len(emails) == 1 and emails[0].status == "SENT"  # sent by the worker too (development folder)
    # the outbox body is cleared once sent: the link is read from the email the development folder received
    name = emails[0].message_id.strip("<>").replace("/", "_").replace("@", "_at_")
    sent = email.message_from_bytes(
        (runtime.settings.data_dir / "mail" / f"{name}.eml").read_bytes(), policy=policy.default
    )
    text = sent.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"Stop these emails: (\S+)", text).group(1)
    assert link == notify.unsubscribe_link(runtime, owner.user_id, owner.org_id)
    parts = urlsplit(link)
    bad = await client.get(f"{parts.path}?{re.sub(r'signature=[^&]+', 'signature=forged', parts.query)}")
    assert bad.status_code == 400
    done = await client.get(f"{parts.path}?{parts.query}")
    assert done.status_code == 200 and "no longer" in done.text
    me = await gql(client, "Me", token=owner.token)
    assert me["data"]["me"]["user"]["notificationPreferences"]["alertEmails"]["enabled"] is False
    await _burst(client, owner, 3)
    assert (await notify.notify(runtime, owner.org_id, now=_later(120))).emails == 0


async def test_malformed_preferences_are_refused(client):
    owner = await register(client)
    for bad in (
        {"enabled": "yes"},
        {"severities": ["URGENT"]},
        {"digestMinutes": -1},
        {"digestMinutes": 5000},
        {"other": 1},
        "on",
    ):
        result = await gql(
            client, "UpdateProfile", {"input": {"notificationPreferences": {"alertEmails": bad}}}, token=owner.token
        )
        assert error_code(result) == "BAD_USER_INPUT", bad
