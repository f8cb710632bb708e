"""Projects and their API keys: made by the operator's CLI or by an admin key over the API."""

PROJECT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
