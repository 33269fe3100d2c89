"""Live alerts: published through Redis after the commit that wrote them, one message per organisation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from app.alerts.models import Alert
from app.runtime.redis import Broadcaster


def alerts_channel(org_id: str) -> str:
    return f"agentrail:alerts:{org_id}"


def encode_alerts(alerts: Sequence[Alert]) -> bytes:
    return orjson.dumps([a.model_dump() for a in alerts])


def decode_alerts(message: bytes) -> list[Alert]:
    out = []
    for data in orjson.loads(message):
        for key in ("created_at", "resolved_at"):
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key])
        out.append(Alert(**data))
    return out


async def publish_alerts(broadcaster: Broadcaster, alerts: Sequence[Alert]) -> None:
    by_org: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_org.setdefault(alert.org_id, []).append(alert)
    if by_org:
        await broadcaster.publish_many([(alerts_channel(org), encode_alerts(batch)) for org, batch in by_org.items()])
