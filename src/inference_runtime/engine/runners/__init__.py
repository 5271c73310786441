"""Model runners."""
