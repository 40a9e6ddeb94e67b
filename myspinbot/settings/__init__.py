"""Settings split by environment: ``base`` (shared, all from the environment),
``local`` (one machine, ``make run``), ``test`` (``make test``) and ``production``."""
