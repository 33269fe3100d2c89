"""Webhooks: endpoints an organisation registers, and the signed deliveries of its events to them.

`service.emit_event` writes one delivery row per matching endpoint in the caller's transaction (the outbox);
`service.dispatch_emitted` queues them after the commit; `delivery.deliver_due` claims, sends and records.
"""
