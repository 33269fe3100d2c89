"""Organisations, users, sign-in tokens and API keys."""
