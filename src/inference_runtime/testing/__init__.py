"""Test kit shipped with the package, for the runtime's own tests and for its users'."""

from inference_runtime.testing.clock import ManualClock

__all__ = ["ManualClock"]
