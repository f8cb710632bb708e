"""Where `finetune up` stores the API key it makes and where the CLI looks for one.

Both sides need the path: the server's settings (FT_API_KEY_FILE) and the CLI client, which
imports nothing of the server. So it lives here, in a module that imports nothing.
"""

# Relative to the folder the service and the CLI run in, like the rest of `var/`.
DEFAULT_API_KEY_FILE = "var/api-key"
