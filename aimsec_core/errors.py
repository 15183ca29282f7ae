"""The one error hierarchy.

Every error aimsec raises derives from :class:`AimsecError` and also from the builtin a
caller already catches: bad input is a ``ValueError``, an unknown model type a
``TypeError``. Messages say what was wrong, what was expected, what was received and, where
there is one, how to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verdict import Verdict


class AimsecError(Exception):
    """Root of every error raised by aimsec."""


class ConfigurationError(AimsecError, ValueError):
    """A setting, constraint or calibration file is invalid."""


class AdapterNotFoundError(AimsecError, TypeError):
    """No installed adapter accepts the model object."""


class MissingExtraError(AimsecError, ImportError):
    """A feature was asked for whose optional dependencies are not installed. The message
    names the packages and the extra that brings them (``pip install 'aimsec[report]'``);
    ``name`` is the first missing module."""


class UncopyableError(ConfigurationError, TypeError):
    """A guarded object, or a part of its guard (a sink), that cannot be pickled or
    copied without losing part of the guard: refused, never silently dropped. The message
    names the part and how to fix it."""


class CalibrationError(AimsecError, RuntimeError):
    """Calibration could not be done, or a calibration file does not fit the model."""


class SecurityViolation(AimsecError):
    """A call was refused. ``verdict`` holds every finding of the call.

    When only the flagged samples were refused (a guard with ``on_flagged="samples"``),
    ``allowed`` holds the batch indices that were not, and ``allowed_output`` the model's
    output for them (rows in that order); otherwise ``allowed`` is empty and
    ``allowed_output`` is ``None``."""

    allowed: tuple[int, ...] = ()
    allowed_output: Any = None

    def __init__(self, message: str, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


class InvalidInputError(SecurityViolation, ValueError):
    """The input failed validation.

    ``check`` names the failed check; ``expected`` and ``received`` describe the mismatch.
    """

    check = "input"

    def __init__(
        self,
        message: str,
        verdict: Verdict | None = None,
        *,
        check: str | None = None,
        expected: Any = None,
        received: Any = None,
    ) -> None:
        super().__init__(message, verdict)
        if check is not None:
            self.check = check
        self.expected = expected
        self.received = received


class EmptyInputError(InvalidInputError):
    check = "empty"


class InputFormatError(InvalidInputError):
    """Wrong type, dtype, rank or shape: the model could not run this input at all."""

    check = "format"


class InputTooLargeError(InvalidInputError):
    check = "size"


class NonFiniteInputError(InvalidInputError):
    check = "finite"


class ValueRangeError(InvalidInputError):
    check = "range"


class StructuralAnomalyError(InvalidInputError):
    """``max_gradient`` or ``min_sparsity`` failed: the input's structure is unusual."""

    check = "structure"


class UnguardedCallError(AimsecError, NotImplementedError):
    """A framework method that would run the model without its inputs being screened;
    ``aimsec_core.unguard(guarded)`` gives the plain model to callers who mean to."""


class UnguardedAttributeError(UnguardedCallError, AttributeError):
    """An attribute of the model that would run it unscreened (a framework's private
    session handle, say), refused when read through the guarded object; ``hasattr`` is
    false for it, as for any attribute that is not there."""


class AdversarialInputError(SecurityViolation):
    """A detector scored the input above its calibrated threshold."""


class RateLimitedError(SecurityViolation):
    """The client exceeded its request rate (or minimum interval). ``retry_after`` is the
    number of seconds after which a call would be admitted again (HTTP ``Retry-After``)."""

    def __init__(self, message: str, verdict: Verdict | None = None, *,
                 retry_after: float = 0.0) -> None:
        super().__init__(message, verdict)
        self.retry_after = retry_after


class ClientBlockedError(SecurityViolation):
    """The client is locked out after too many refused calls. ``retry_after`` is the
    number of seconds the lockout still lasts."""

    def __init__(self, message: str, verdict: Verdict | None = None, *,
                 retry_after: float = 0.0) -> None:
        super().__init__(message, verdict)
        self.retry_after = retry_after


class QueryAttackError(SecurityViolation):
    """The query stream looks like a black-box attack: repeated or near-duplicate queries."""


class ExtractionSuspectedError(SecurityViolation):
    """The client's queries look like a model-extraction attack."""


class StoreUnavailableError(SecurityViolation):
    """The shared state store is unreachable and the policy is ``fail_closed``."""


#: check name -> the error raised when that check refuses a call.
ERROR_FOR_CHECK: dict[str, type[SecurityViolation]] = {
    "null": EmptyInputError,
    "empty": EmptyInputError,
    "format": InputFormatError,
    "missing": InputFormatError,
    "unknown": InputFormatError,
    "dtype": InputFormatError,
    "shape": InputFormatError,
    "size": InputTooLargeError,
    "finite": NonFiniteInputError,
    "range": ValueRangeError,
    "max_gradient": StructuralAnomalyError,
    "min_sparsity": StructuralAnomalyError,
    # the checks of a bare InvalidInputError / StructuralAnomalyError given to refuse()
    "input": InvalidInputError,
    "structure": StructuralAnomalyError,
    # request monitoring
    "rate_limit": RateLimitedError,
    "min_interval": RateLimitedError,
    "lockout": ClientBlockedError,
    "repeat": QueryAttackError,
    "near_duplicate": QueryAttackError,
    "extraction": ExtractionSuspectedError,
    "store_unavailable": StoreUnavailableError,
}


def exception_text(exc: BaseException) -> str:
    """``"Type: message"`` for ``exc``, as an audit line records a model's error. The
    message is the exception's own ``str``; one whose ``__str__`` raises (a model's error
    is the model's code) is written ``<unprintable>``, so the line is never lost to it."""
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable>"
    return f"{type(exc).__name__}: {message}"
