"""Billing: plans and their limits, Stripe Checkout/Portal, subscription state from signed webhooks,
the monthly record quota and per-key/per-user rate limits."""
