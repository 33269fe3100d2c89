"""The one place ingest calls into compliance.

Until rules exist (the compliance issue), evaluation finds nothing and no record has alerts; the
signatures are the ones the rules engine keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from app.audit.models import AuditRecord
from app.db import AsyncSession


async def evaluate(session: AsyncSession, records: Sequence[AuditRecord]) -> list[Any]:
    """Checks freshly written records inside the ingest transaction; returns the alerts it raised."""
    return []


def has_alerts_condition(record_id: Any) -> Any:
    """SQL condition: the record with id `record_id` raised at least one alert."""
    from app.compliance.models import Alert

    return sa.exists().where(Alert.audit_log_id == record_id)
