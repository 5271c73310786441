"""Test kit shipped with the package, for the runtime's own tests and for its users'."""

from inference_runtime.testing.clock import ManualClock
from inference_runtime.testing.fake_runner import FakeRunner
from inference_runtime.testing.sink import RecordingSink

__all__ = ["FakeRunner", "ManualClock", "RecordingSink"]

# MockUpstream (an aiohttp server) is imported on first use, so that importing the test kit for
# FakeRunner or ManualClock does not pay for the HTTP stack.
from typing import TYPE_CHECKING, Any

from inference_runtime.testing.mock_upstream_faults import Fault

if TYPE_CHECKING:
    from inference_runtime.testing.mock_upstream import MockUpstream, RecordedRequest

__all__ += ["Fault", "MockUpstream", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    if name in ("MockUpstream", "RecordedRequest"):
        from inference_runtime.testing import mock_upstream

        return getattr(mock_upstream, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
