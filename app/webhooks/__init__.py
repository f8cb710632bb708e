"""Signed webhooks: a project's endpoints, the outbox written with each job event, and the
dispatcher that delivers it (Standard Webhooks: webhook-id, webhook-timestamp,
webhook-signature)."""
