"""Webhooks: endpoints an organisation registers, and the signed deliveries of its events to them.

`service.emit_event` writes one delivery row per matching endpoint in the caller's transaction (the outbox);
the caller's unit of work queues them after its commit; `delivery.deliver_due` claims, sends and records.
"""
