"""OpenTelemetry ingest: OTLP/HTTP traces become audit records."""
