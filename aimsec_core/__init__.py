"""aimsec: security middleware for trained ML models.

>>> import aimsec_core                                   # doctest: +SKIP
>>> guarded = aimsec_core.guard(model, name="digits")   # doctest: +SKIP
>>> with aimsec_core.client("203.0.113.7"):             # doctest: +SKIP
...     guarded.predict(x)

This package imports no ML framework; adapters for torch, Keras, scikit-learn and
onnxruntime are plugins found through the ``aimsec.adapters`` entry-point group.
"""

from .adapter import Adapter, Capabilities
from .api import guard, guard_of, unguard
from .audit import AuditLog
from .compat.threat_modeler import ChatbotThreatModeler
from .context import (client, current_client, current_request_id, isolated,
                      isolated_generator, request_id)
from .errors import (AdapterNotFoundError, AdversarialInputError, AimsecError,
                     CalibrationError, ConfigurationError, EmptyInputError, InputFormatError,
                     InputTooLargeError, InvalidInputError, NonFiniteInputError,
                     SecurityViolation, StructuralAnomalyError, UnguardedCallError,
                     ValueRangeError, RateLimitedError, ClientBlockedError, QueryAttackError,
                     ExtractionSuspectedError, StoreUnavailableError, UncopyableError,
                     MissingExtraError)
from .detection.calibration import Calibration
from .guard import Guard
from .compat import AISecurityMonitor
from .incidents import IncidentSink, IncidentStore
from .compat.protector import AIModelProtector
from .registry import installed_adapters, register_adapter
from .serving import AimsecMiddleware
from .signature import Constraints, InputSpec
from .sinks import CallRecord, Sink
from .validation import Refused
from .verdict import Finding, Verdict
from .reporting import report
from .threats import assess_guard

__version__ = "0.1.0"

__all__ = [
    "AISecurityMonitor", "AimsecMiddleware", "IncidentSink", "IncidentStore",
    "AIModelProtector", "Adapter", "AdapterNotFoundError", "AdversarialInputError",
    "AimsecError", "AuditLog", "ChatbotThreatModeler", "ClientBlockedError", "ExtractionSuspectedError",
    "MissingExtraError", "QueryAttackError", "RateLimitedError", "StoreUnavailableError",
    "UncopyableError", "Calibration", "CalibrationError", "CallRecord", "Capabilities",
    "ConfigurationError", "Constraints", "EmptyInputError", "Finding", "Guard",
    "InputFormatError", "InputSpec", "InputTooLargeError", "InvalidInputError",
    "NonFiniteInputError", "Refused", "SecurityViolation", "Sink", "StructuralAnomalyError",
    "UnguardedCallError", "ValueRangeError", "Verdict", "assess_guard", "client",
    "current_client", "current_request_id", "guard", "guard_of", "isolated",
    "isolated_generator", "request_id", "installed_adapters", "register_adapter", "report",
    "unguard",
]
