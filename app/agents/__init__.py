"""Agents: the named actors whose audit records an organisation collects."""
