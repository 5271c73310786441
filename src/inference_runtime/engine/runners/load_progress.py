"""What a model load is doing, in the log: each phase as it starts and, at the end, the whole
time. transformers' progress bars only show on a terminal and only for some phases (the GGUF
conversion); a service's log shows every phase this way."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("inference_runtime.engine")


class LoadProgress:
    """``phase(name)`` for each step in order; ``done(detail)`` once at the end."""

    def __init__(self, *, what: str, phases: int) -> None:
        self.what = what
        self.phases = phases
        self.number = 0
        self.started = time.monotonic()
        self._phase_started = self.started

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.number += 1
        log.info(
            "loading %s: [%d/%d] %s (%.1fs so far)",
            self.what,
            self.number,
            self.phases,
            name,
            now - self.started,
        )
        self._phase_started = now

    def done(self, detail: str = "") -> float:
        elapsed = time.monotonic() - self.started
        log.info("loaded %s in %.1fs%s", self.what, elapsed, f" ({detail})" if detail else "")
        return elapsed
