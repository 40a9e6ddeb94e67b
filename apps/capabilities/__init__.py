"""Capabilities: the registry of services a graph node can call.

Each service lives in ``services/<name>/`` with a ``capability.json`` declaration (id,
version, queue, parameter schema, limits) and a ``handler.py``. The registry reads the
declarations only; handlers are imported lazily by the worker that runs them.
"""
