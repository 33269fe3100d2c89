"""The emails we send, as templates: a subject, a plain-text body and an HTML body each. Values are escaped in
the HTML body; `$name` placeholders name them (string.Template, so a value cannot inject another placeholder)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from string import Template
from typing import Any


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class EmailTemplate:
    subject: str
    text: str
    html: str

    def render(self, values: dict[str, Any]) -> Rendered:
        plain = {k: str(v) for k, v in values.items()}
        escaped = {k: html.escape(v) for k, v in plain.items()}
        subject = Template(self.subject).substitute(plain).replace("\r", " ").replace("\n", " ")
        return Rendered(subject, Template(self.text).substitute(plain), Template(self.html).substitute(escaped))


def _page(body: str) -> str:
    return f'<!doctype html><html><body style="font-family:sans-serif;max-width:40em">{body}</body></html>'


TEMPLATES: dict[str, EmailTemplate] = {
    "invitation": EmailTemplate(
        subject="$inviter invited you to $organization on Agentrail",
        text=(
            "$inviter invited you to join $organization on Agentrail as $role.\n\n"
            "Accept the invitation: $link\n\nThe link works once and expires on $expires.\n"
        ),
        html=_page(
            "<p>$inviter invited you to join <b>$organization</b> on Agentrail as $role.</p>"
            '<p><a href="$link">Accept the invitation</a></p><p>The link works once and expires on $expires.</p>'
        ),
    ),
    "verification": EmailTemplate(
        subject="Confirm your email address for Agentrail",
        text="Confirm that $email is yours: $link\n\nThe link works once and expires on $expires.\n",
        html=_page(
            '<p>Confirm that $email is yours: <a href="$link">confirm my address</a>.</p>'
            "<p>The link works once and expires on $expires.</p>"
        ),
    ),
    "password_reset": EmailTemplate(
        subject="Reset your Agentrail password",
        text=(
            "Someone asked to reset the password of $email. If it was you: $link\n\n"
            "The link works once and expires on $expires. If it was not you, ignore this email.\n"
        ),
        html=_page(
            '<p>Someone asked to reset the password of $email. If it was you: <a href="$link">choose a new'
            " password</a>.</p><p>The link works once and expires on $expires. If it was not you, ignore this"
            " email.</p>"
        ),
    ),
    "alert_notification": EmailTemplate(
        subject="[Agentrail] $count new alert(s) in $organization",
        text="$summary\n\nSee them: $link\n\nStop these emails: $unsubscribe\n",
        html=_page(
            '<pre>$summary</pre><p><a href="$link">See them</a></p><p><a href="$unsubscribe">Stop these emails</a></p>'
        ),
    ),
}


def render(template: str, values: dict[str, Any]) -> Rendered:
    return TEMPLATES[template].render(values)
