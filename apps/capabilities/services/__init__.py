"""Service plug-ins: one folder each, holding ``capability.json`` and ``handler.py``.

To add a service, copy a folder (``debug_echo`` is the smallest), rename it, and edit
its declaration and handler. Heavy libraries are imported inside the handler module,
which only the worker that runs the service imports.
"""
