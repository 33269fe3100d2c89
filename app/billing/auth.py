"""Who may call the billing domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, managers, public

VIEW = managers("view billing")
MANAGE = managers("manage billing")

PERMISSIONS = Permissions(
    "billing",
    {
        "Query.billing": VIEW,
        "Mutation.createCheckoutSession": MANAGE,
        "Mutation.createPortalSession": MANAGE,
        "GET /api/v1/billing/subscription": VIEW,
        "POST /api/v1/billing/checkout-session": MANAGE,
        "POST /api/v1/billing/portal-session": MANAGE,
        "POST /api/v1/billing/webhook": public("receive Stripe events", note="verified by `Stripe-Signature`"),
        "GET /api/v1/billing/prices": public("list prices", note="for a pricing page"),
    },
)
