"""Graphs: the ``langgraph.v1`` document, its validation, and the walker that runs it."""
