"""Audit records: masking, integrity (checksums, Merkle roots, signed digests), ingest and reads."""
