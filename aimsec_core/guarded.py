"""What every guarded object offers besides its framework's own methods.

Adapters mix :class:`GuardedMixin` into their framework-shaped class, so the same
``last_verdict``, ``calibrate`` and ``save_calibration`` exist on a guarded torch module,
Keras model, scikit-learn estimator and onnxruntime session.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CalibrationError, ConfigurationError

if TYPE_CHECKING:
    from .detection.calibration import Calibration
    from .guard import Guard
    from .verdict import Verdict


class GuardedMixin:
    __aimsec_guard__: Guard

    @property
    def last_verdict(self) -> Verdict | None:
        """The verdict of the latest call from this thread or asyncio task."""
        return self.__aimsec_guard__.last_verdict

    def calibrate(self, x_clean: Any, *, fpr: float = 0.05, detectors: list[Any] | None = None,
                  image_shape: tuple[int, int] | None = None, seed: int = 0,
                  reference: Any = None, batch_size: int | None = None) -> Calibration:
        """Fit the adversarial-input detectors on clean data at a false-positive target.

        ``detectors`` names them (default: boundary where autograd exists, else margin;
        density, sparsity, neighbours, shift, robust); ``image_shape`` lets flat inputs be
        treated as images by the squeeze and jump detectors. ``reference`` is more clean
        data (the training set, say) for the detectors that learn what clean inputs look
        like (density, neighbours, shift, robust); the threshold is still set on
        ``x_clean`` alone. ``fpr`` is
        the share of clean samples flagged; with ``batch_size`` it is the share of clean
        calls of that many samples refused (a call is refused when any sample is flagged).
        Raises ``ConfigurationError`` for arguments out of range and ``CalibrationError``
        when the data cannot calibrate (too few samples, not clean).
        """
        return self.__aimsec_guard__.calibrate(x_clean, fpr=fpr, detectors=detectors,
                                               image_shape=image_shape, seed=seed,
                                               reference=reference, batch_size=batch_size)

    def load_calibration(self, path: str | Path, *, force: bool = False) -> Calibration:
        """Turn detection on with a file written by :meth:`save_calibration`.

        The file is checked as untrusted input; one made for a different model (its
        recorded fingerprint differs) raises ``CalibrationError`` unless ``force=True``."""
        guard = self.__aimsec_guard__
        guard.use_calibration(path, force=force)
        assert guard.calibration is not None
        return guard.calibration

    def close(self, timeout: float = 5.0) -> bool:
        """Flush this guard's sinks: deliver the queued incidents and alerts within
        ``timeout`` seconds (True when all were delivered in time) and flush the audit log.
        The guarded model stays usable; shared background workers keep serving other
        guards, and stop at interpreter exit."""
        done = True
        for sink in self.__aimsec_guard__.sinks:
            flush = getattr(sink, "flush", None)
            if not callable(flush):
                continue
            try:
                result = flush(timeout=timeout) if _takes_timeout(flush) else flush()
                done = done and result is not False
            except Exception:  # closing must not raise into serving code's shutdown
                done = False
        return done

    def request_analysis(self, window_minutes: float = 60) -> dict[str, Any]:
        """What request monitoring saw over the last ``window_minutes``.

        The original ``analyze_requests`` keys (``total_requests``, ``unique_inputs``,
        ``request_rate`` per minute, ``suspicious_patterns``) plus ``refused_requests``,
        ``rate_per_client``, ``top_clients``, ``repeated_inputs``,
        ``near_duplicate_matches``, ``findings`` (count per check) and
        ``active_suspicions`` (lockouts, extraction). Counts are this process's calls.
        """
        monitor = self.__aimsec_guard__.monitor
        if monitor is None:
            raise ConfigurationError("request monitoring is off for this model "
                                     "(guard(..., policy=False))")
        return monitor.request_analysis(window_minutes)

    def save_calibration(self, path: str | Path) -> Path:
        """Write the calibration to ``path`` (``.npz``, appended to a name that ends
        otherwise); returns the path written: load it with ``guard(..., calibration=path)``.
        A folder is a :class:`CalibrationError`."""
        calibration = self.__aimsec_guard__.calibration
        if calibration is None:
            raise CalibrationError("nothing to save: call calibrate(x_clean) first")
        return calibration.save(path)


def _takes_timeout(method: Any) -> bool:
    import inspect

    try:
        return "timeout" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
