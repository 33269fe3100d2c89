"""Metrics: hourly rollups of audit records, and the `metrics` query over rollups plus the live tail."""
