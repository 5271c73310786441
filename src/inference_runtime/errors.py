"""The error tree of inference-runtime.

Every error the runtime raises on purpose derives from :class:`InferenceRuntimeError`. Each class
says whether trying again can help (``retryable``): a retryable error is about the moment (a full
queue, a stopped actor that will be replaced, a timeout), a final one is about the request or the
program (a bad name, an actor that cannot even start).

::

    InferenceRuntimeError                         retryable   HTTP
    ├── RequestError                              final       400 invalid_request_error
    │   ├── UnsupportedParameter                  final       400 (names the parameter)
    │   ├── ContextLengthExceeded                 final       400 context_length_exceeded
    │   └── ContentFiltered                       final       400 content_filter
    ├── AuthenticationFailed                      final       401
    ├── PermissionDenied                          final       403
    ├── NotFound                                  final       404
    │   └── ModelNotFound                         final       404 model_not_found
    ├── Conflict                                  final       409 (the admin API: exists)
    ├── RequestTooLarge                           final       413
    ├── UnsupportedMediaType                      final       415 (a body that is not JSON)
    ├── RequestFailedReplicas                     final       500 request_failed_replica
    ├── Backpressure                              retryable   429 + Retry-After
    │   ├── MailboxFull                           retryable   (an actor's bounded mailbox)
    │   ├── RateLimited                           retryable   429 rate_limit_exceeded
    │   └── BudgetExceeded                        retryable   429 budget_exceeded
    ├── Unavailable                               retryable   503 + Retry-After
    │   ├── NoHealthyReplica                      retryable   (none routable, or all failed)
    │   ├── ReplicaFailed                         retryable   (its context was poisoned)
    │   ├── CircuitOpen                           retryable
    │   └── PlacementFailed                       retryable   (no node/GPU fits a replica)
    ├── UpstreamError                             retryable   502
    ├── GatewayTimeout                            retryable   504
    ├── EngineError                                           (raised by model runners)
    │   ├── ContextPoisoned                       retryable   the context restarts
    │   ├── OutOfMemory                           final       context restarts; request fails
    │   └── Unrecoverable                         final       escalates: the replica is taken out
    └── ActorError                                            (the actor kernel)
        ├── InvalidActorName                      final       a name that breaks the naming rules
        ├── ActorNameTaken                        final       a sibling already has that name
        ├── ActorStopped                          retryable   the actor stopped before it answered
        ├── AskTimeout                            retryable   504: no answer within the timeout
        └── ActorInitializationError              final       building or starting an actor failed

Anything else reaching the gateway is a bug: 500.

The gateway maps the tree to HTTP statuses and OpenAI's error body in exactly one place
(``gateway/errors.py``).
"""

from __future__ import annotations

from typing import ClassVar


class InferenceRuntimeError(Exception):
    """Root of every error the runtime raises on purpose."""

    retryable: ClassVar[bool] = False
    """True when the same request may succeed if tried again (later, or elsewhere)."""


class ActorError(InferenceRuntimeError):
    """An error of the actor kernel."""


class InvalidActorName(ActorError, ValueError):
    """An actor name that is empty, contains ``/``, or starts with the reserved ``$``."""


class ActorNameTaken(ActorError, ValueError):
    """Another live child of the same parent already has this name."""


class RequestError(InferenceRuntimeError):
    """The request is malformed or asks for something this deployment cannot do."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class UnsupportedParameter(RequestError):
    """A parameter the deployment cannot honour: refused, never silently dropped."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}", param=param, code="unsupported_parameter")


class ContextLengthExceeded(RequestError):
    """Prompt plus ``max_tokens`` do not fit the model's context window."""

    def __init__(
        self, *, prompt_tokens: int, max_tokens: int, max_context: int, at_least: bool = False
    ) -> None:
        # at_least: the prompt was refused on its size, before it was tokenized
        bound = "at least " if at_least else ""
        super().__init__(
            f"This model's maximum context length is {max_context} tokens. However, you "
            f"requested {bound}{prompt_tokens + max_tokens} tokens ({bound}{prompt_tokens} in "
            f"the messages, {max_tokens} in the completion). Please reduce the length of the "
            "messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )


class ContentFiltered(RequestError):
    """The provider refused the content."""


class AuthenticationFailed(InferenceRuntimeError):
    """Missing or wrong API key."""


class PermissionDenied(InferenceRuntimeError):
    """The key is valid but not for this."""


class NotFound(InferenceRuntimeError):
    """The addressed thing does not exist."""


class ModelNotFound(NotFound):
    """No deployment serves the requested model."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")
        self.model = model
        self.param = "model"


class Conflict(InferenceRuntimeError):
    """The change clashes with the current state (creating a deployment that exists)."""


class RequestTooLarge(InferenceRuntimeError):
    """The body is over the gateway's limit."""


class UnsupportedMediaType(InferenceRuntimeError):
    """The body's ``Content-Type`` is not ``application/json``."""


class RequestFailedReplicas(InferenceRuntimeError):
    """The request was in the failing step of two replicas: it is the likely cause (a query of
    death), so it is answered with this final error and never tried on a third."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Backpressure(InferenceRuntimeError):
    """No capacity right now; try again after ``retry_after`` seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Backpressure):
    """A requests- or tokens-per-minute limit was hit."""


class BudgetExceeded(Backpressure):
    """The deployment's spend budget has no room for this request."""


class Unavailable(InferenceRuntimeError):
    """Nothing can serve the request at the moment."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoHealthyReplica(Unavailable):
    """The deployment has no replica that may take requests."""


class ReplicaFailed(Unavailable):
    """The replica serving the request failed (its context was poisoned or it was taken out)."""

    in_step: bool = False
    """The request was in the step that failed (or hung): it may be what broke the replica."""
    alone: bool = False
    """... and no other request shared that step: it is what broke the replica."""

    def __init__(
        self, message: str, *, retry_after: float = 1.0, in_step: bool = False, alone: bool = False
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.in_step, self.alone = in_step, alone


class CircuitOpen(Unavailable):
    """The circuit breaker for the upstream is open."""


class PlacementFailed(Unavailable):
    """No node can take a replica now; the message says why (and shows in the status)."""


class UpstreamError(InferenceRuntimeError):
    """A remote provider answered with an error or broke the connection."""

    retryable = True


class GatewayTimeout(InferenceRuntimeError):
    """The request took longer than allowed."""

    retryable = True


class EngineError(InferenceRuntimeError):
    """Raised by model runners; the engine's supervision decides what follows."""


class ContextPoisoned(EngineError):
    """The device context is unusable (CUDA error, lost device); the context is rebuilt."""

    retryable = True


class OutOfMemory(EngineError):
    """The device ran out of memory; the context is rebuilt and the causing request fails."""

    def __init__(self, message: str, *, sequence_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.sequence_ids = sequence_ids


class Unrecoverable(EngineError):
    """The replica cannot go on; it is taken out of service at once."""


class MailboxFull(Backpressure, ActorError):
    """``tell`` or ``ask`` on a bounded mailbox that is at capacity."""

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(f"mailbox of {path} is full ({capacity} messages)")
        self.path = path
        self.capacity = capacity


class ActorStopped(ActorError):
    """The actor stopped (or was never alive) before it answered."""

    retryable = True

    def __init__(self, path: str) -> None:
        super().__init__(f"actor {path} is stopped")
        self.path = path


class AskTimeout(GatewayTimeout, ActorError, TimeoutError):
    """No answer arrived within the ask's timeout."""

    retryable = True

    def __init__(self, path: str, timeout: float, message: object) -> None:
        super().__init__(
            f"ask to {path} timed out after {timeout:g}s (message {type(message).__name__})"
        )
        self.path = path
        self.timeout = timeout


class ActorInitializationError(ActorError):
    """Creating the actor instance or running its ``pre_start``/``post_restart`` failed.

    The original exception is the ``__cause__``. The default supervisor decider stops an actor that
    fails this way instead of restarting it in a loop.
    """

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"actor {path} failed to start: {cause!r}")
        self.path = path
        self.__cause__ = cause
