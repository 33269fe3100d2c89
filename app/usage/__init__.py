"""Plans and the use made of them: the plans and their limits (`plans.py`), the monthly record quota and the
counted resources (`quota.py`), per-key and per-user rate limits (`ratelimit.py`) and the per-request settings
and rate-limit headers (`middleware.py`). Below `orgs` and every domain that checks a limit; `billing` (Stripe)
sits above it and sets the plan."""
