"""Who may call the webhooks domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Access, Permissions, managers, users
from app.principal import Role, Scope

MANAGE = managers("manage webhooks")
# Deliveries carry the events' payloads and the receivers' answers (response bodies can hold whatever the
# receiving system echoes): diagnostics for those who manage the endpoints, not for every member.
# A full-scope API key (one made with every scope) may send tests and read deliveries too: seed 000's clients call
# `POST /v1/webhooks/test` and `GET /v1/webhooks` with their API key; managing endpoints stays with people.
DELIVERIES = Access(
    "read webhook deliveries",
    role=Role.ADMIN,
    api_keys=Scope.FULL,
    note="payloads and receivers' response bodies; API keys with the full scope",
)
TEST = Access("send test webhooks", role=Role.ADMIN, api_keys=Scope.FULL, note="API keys with the full scope")

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
        "Mutation.sendTestWebhook": TEST,
        "POST /v1/webhooks/test": TEST,
        "GET /v1/webhooks": DELIVERIES,
        "Mutation.redeliverWebhook": managers("redeliver webhooks"),
    },
)
