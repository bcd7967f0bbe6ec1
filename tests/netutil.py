"""Addresses for tests of unreachable stores (tests only ever talk to 127.0.0.1); the
``no_cloud_lookups`` and ``silent_endpoint`` fixtures are in conftest.py."""

# A port nothing listens on: connecting is refused at once.
CLOSED = "http://127.0.0.1:9"
