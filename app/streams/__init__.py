"""Live streams (server-sent events): a job's events and metric points, a project's job changes.

One `StreamHub` per API process polls the database for every open stream at once (hub.py),
reading only as far as no row can still appear behind it (reads.py); each stream is an async
generator that waits on its own small queue and holds neither a thread nor a connection while
it waits (responses.py). A stream's position is a cursor over the event and metric-point id
sequences (items.py), sent as the SSE `id:` so that `Last-Event-ID` resumes it exactly. The routes' parameters
and OpenAPI answers are in params.py.
"""
