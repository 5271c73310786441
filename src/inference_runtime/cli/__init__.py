"""The ``inference-runtime`` command line."""
