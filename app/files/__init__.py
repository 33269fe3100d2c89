"""File storage for generated exports and reports: its tables and its backends (PostgreSQL chunks, S3)."""
