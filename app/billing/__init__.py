"""Billing: Stripe Checkout/Portal and the subscription state (the plan) from signed webhooks. The plans, their
limits and their enforcement are in `app.usage`."""
