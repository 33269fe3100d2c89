"""Email: an outbox in PostgreSQL, templates, and the worker's SMTP sender (aiosmtplib)."""
