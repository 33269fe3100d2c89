"""Who may call the billing domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, managers, public

PERMISSIONS = Permissions(
    "billing",
    {
        "Query.billing": managers("view billing"),
        "Mutation.createCheckoutSession": managers("manage billing"),
        "Mutation.createPortalSession": managers("manage billing"),
        "POST /api/v1/billing/webhook": public("receive Stripe events", note="verified by `Stripe-Signature`"),
        "GET /api/v1/billing/prices": public("list prices", note="for a pricing page"),
    },
)
