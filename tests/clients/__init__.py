"""Real clients against a live server (a package, so that its conftest is not the `conftest` module
the hardening tests import from)."""
