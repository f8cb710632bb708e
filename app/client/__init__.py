"""The `finetune` client commands: they speak the HTTP API, so they work against any service."""

# Where `finetune api` listens by default; --url and FT_URL point elsewhere.
DEFAULT_URL = "http://127.0.0.1:8000"
