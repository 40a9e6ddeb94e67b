"""Development-only helpers that tests and benchmarks share.

Real service processes (``services``), random-weight models built from real configs
(``random_models``) and the soak bench's graphs (``soak_graphs``). Production packages
(``myspinbot``, ``apps``, ``gpu_tasks``) never import this package, an import contract in
``pyproject.toml`` says so, and the images leave it out (``.dockerignore``).
"""
