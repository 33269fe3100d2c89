"""Policies: named, versioned rule sets attached to agents."""
