"""Test kit shipped with the package, for the runtime's own tests and for its users'."""

from inference_runtime.testing.clock import ManualClock
from inference_runtime.testing.fake_runner import FakeRunner
from inference_runtime.testing.sink import RecordingSink

__all__ = ["FakeRunner", "ManualClock", "RecordingSink"]
