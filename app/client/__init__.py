"""The `finetune` client commands: they speak the HTTP API, so they work against any service."""
