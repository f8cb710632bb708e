"""The `finetune` client commands: they speak the HTTP API, so they work against any service."""

# Where `finetune api` listens by default; --url and FT_URL point elsewhere.
DEFAULT_URL = "http://127.0.0.1:8000"
# Where `finetune up` stores the key it makes (FT_API_KEY_FILE), relative to its folder.
DEFAULT_API_KEY_FILE = "var/api-key"
