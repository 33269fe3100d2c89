"""Who may call the webhooks domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Permissions, managers, users

MANAGE = managers("manage webhooks")
# Deliveries carry the events' payloads and the receivers' answers (response bodies can hold whatever the
# receiving system echoes): diagnostics for those who manage the endpoints, not for every member.
DELIVERIES = managers("read webhook deliveries", note="payloads and receivers' response bodies")

PERMISSIONS = Permissions(
    "webhooks",
    {
        "Query.webhookEndpoints": users("list webhook endpoints", ANY_ROLE, note="never their secrets"),
        "Query.webhookEndpoint": users("read webhook endpoints", ANY_ROLE, note="never their secrets"),
        "Query.webhookDeliveries": DELIVERIES,
        "Query.webhookDelivery": DELIVERIES,
        "Mutation.createWebhookEndpoint": MANAGE,
        "Mutation.updateWebhookEndpoint": MANAGE,
        "Mutation.deleteWebhookEndpoint": MANAGE,
        "Mutation.rotateWebhookSecret": MANAGE,
        "Mutation.sendTestWebhook": managers("send test webhooks"),
        "Mutation.redeliverWebhook": managers("redeliver webhooks"),
    },
)
