"""Builds and runs the whole topology from a config."""
