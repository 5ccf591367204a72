"""Backend contract tests (see _need.py for transport availability, tests/conftest.py for GPUs)."""
