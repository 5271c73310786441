"""``Retries``: whether a failed request may be tried again, and where: one request's account.

A request's own tries (an admission refused, a failed step it was in) are bounded by
``MAX_ATTEMPTS``. A failure of a step it was not in is another request's doing: it counts apart
(``MAX_DISPLACED``), and its replica is avoided only while another can take the request.

A request in the failing step of a replica may be what broke it (a query of death): alone in
the step, it is for sure, and one that was in the failing steps of two replicas is taken to be;
either is answered with a final ``RequestFailedReplicas``. One that shared the step is retried
once, isolated (in steps of its own, ``isolate``), so that it takes no other request down with
it and is alone in the step if it fails again.
"""

from __future__ import annotations

import logging

from inference_runtime.errors import InferenceRuntimeError, ReplicaFailed, RequestFailedReplicas

log = logging.getLogger("inference_runtime.gateway")
MAX_ATTEMPTS = 3
"""Tries of a request whose failures may be its own doing."""
MAX_DISPLACED = 8
"""Retries of a request whose replica failed while it was not in the failing step: not counted
as its tries, but bounded (a replica could fail forever)."""


class Retries:
    """Driven by the request's flow: ``attempt`` counts its tries (each has its own sinks)."""

    __slots__ = ("attempt", "broke", "displaced", "last_error", "pushed_out", "tried")

    def __init__(self) -> None:
        self.attempt = 0
        self.displaced = 0
        """Tries lost to other requests' failures."""
        self.tried: set[str] = set()
        """Replicas to avoid on the next route."""
        self.broke: list[str] = []
        """Replicas whose failing step the request was in."""
        self.last_error: BaseException | None = None
        """What went wrong on a replica last (says more than "no replica left")."""
        self.pushed_out = False
        """The last failure was another request's: the replicas avoided may take it again."""

    @property
    def isolate(self) -> bool:
        """The request is a suspect of a failed step: it runs in steps of its own."""
        return bool(self.broke)

    def own_tries_left(self) -> bool:
        return self.attempt - self.displaced < MAX_ATTEMPTS

    def admission_failed(self, replica: str, error: BaseException) -> None:
        self.tried.add(replica)
        self.last_error, self.pushed_out = error, False

    def nothing_routable(self) -> bool:
        """No replica outside ``tried``: True when avoiding them was only a preference (the
        request was pushed out by another's failure: any replica that is up again may take
        it), False when the request failed there itself (a replica's own retries, a remote
        engine's, were spent: no more here) or none is up at all."""
        if not (self.tried and self.pushed_out):
            return False
        self.tried, self.pushed_out = set(), False
        return True

    def restart(self) -> None:
        """On another deployment (a fallback): nothing tried there yet."""
        self.tried, self.last_error, self.pushed_out = set(), None, False

    def verdict(self, error: BaseException, replica: str, request_id: str) -> BaseException:
        """What a failure of the request on ``replica`` stands for: the final error of a query
        of death, or the failure itself."""
        if not (isinstance(error, ReplicaFailed) and error.in_step):
            return error
        self.broke.append(replica)
        if not error.alone and len(self.broke) == 1:
            return error  # a suspect: one retry, isolated
        if len(self.broke) == 1:
            where = f"alone in the failing step of replica {replica}"
        else:  # shared the first step, and failed the next (isolated) one too
            where = f"in the failing steps of replicas {', '.join(self.broke)}"
        log.error("request %s was %s: answered, not retried", request_id, where)
        final = RequestFailedReplicas(
            f"request {request_id} was {where}; it is not retried", request_id=request_id
        )
        final.__cause__ = error
        return final

    def retry(self, error: BaseException, replica: str) -> bool:
        """Whether the request may be tried again after ``error`` (a ``verdict``) on ``replica``
        (nothing of it reached the client); if so, which replicas the next route avoids."""
        if not (isinstance(error, InferenceRuntimeError) and error.retryable):
            return False
        if isinstance(error, ReplicaFailed) and not error.in_step:  # displaced
            if self.displaced >= MAX_DISPLACED:
                return False
            self.displaced += 1
            # not its fault: any replica but the one rebuilding (and those it may have broken)
            self.tried, self.pushed_out = {*self.broke, replica}, True
        elif self.own_tries_left():
            self.tried.add(replica)
            self.pushed_out = False
        else:
            return False
        self.last_error = error
        return True
