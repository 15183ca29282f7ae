"""Copies and pickles of a guarded ``InferenceSession``.

onnxruntime's ``InferenceSession`` cannot be pickled, but it can be opened again from what
it was made of: the model's bytes (or its file path), the execution providers with their
options, and the session options. :class:`SessionRecipe` holds those, so a deep copy or a
pickle of a guarded session opens a session of its own on the same model and carries the
whole guard with it (calibration, policy, sinks; see ``Guard.__getstate__``).

What cannot travel: session options set through methods onnxruntime cannot read back
(``add_session_config_entry``, ``register_custom_ops_library``, external initializers,
free dimension overrides). A session opened from a file path re-reads that file in the
new process. A session whose model is neither bytes nor a path (a model package) raises
:class:`UncopyableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnxruntime

from aimsec_core.errors import UncopyableError
from aimsec_core.guard import Guard

#: The ``SessionOptions`` attributes onnxruntime lets us read back and set again.
_OPTIONS = ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse",
            "enable_profiling", "execution_mode", "execution_order",
            "graph_optimization_level", "inter_op_num_threads", "intra_op_num_threads",
            "log_severity_level", "log_verbosity_level", "logid", "optimized_model_filepath",
            "profile_file_prefix", "use_deterministic_compute", "use_per_session_threads")


@dataclass(frozen=True)
class SessionRecipe:
    """What an ``InferenceSession`` is opened from, in picklable form."""

    model: bytes | str
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, Any], ...]
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, session: Any) -> SessionRecipe:
        model = session.__dict__.get("_model_bytes") or session.__dict__.get("_model_path")
        if not isinstance(model, (bytes, str)):
            raise UncopyableError(
                "this InferenceSession was not opened from model bytes or a file path (a "
                "model package?), so a copy of the guarded session cannot open the same "
                "model; guard a session made with InferenceSession(path_or_bytes, ...)")
        given = session.get_session_options()
        options = []
        for name in _OPTIONS:
            value = getattr(given, name, None)
            if value is not None:
                options.append((name, _plain(value)))
        return cls(model, tuple(session.get_providers()),
                   tuple(dict(o) for o in _provider_options(session)), tuple(options))

    def open(self) -> Any:
        """A new ``InferenceSession`` of the same model, providers and options."""
        options = onnxruntime.SessionOptions()
        for name, value in self.options:
            setattr(options, name, _enum(name, value))
        try:
            return onnxruntime.InferenceSession(self.model, sess_options=options,
                                                providers=list(self.providers),
                                                provider_options=list(self.provider_options))
        except Exception as exc:  # the file moved or was deleted since the original opened
            source = (f"the file {self.model!r}" if isinstance(self.model, str)
                      else "its bytes")
            raise UncopyableError(
                f"a copy of the guarded session must open the model again from {source}, "
                f"and onnxruntime could not ({type(exc).__name__}: {exc}); keep the model "
                "file where the session was opened from, or open the session from the "
                "model's bytes") from exc


def _provider_options(session: Any) -> list[dict[str, Any]]:
    found = session.get_provider_options()  # provider name -> its options
    return [found.get(name, {}) for name in session.get_providers()]


def _plain(value: Any) -> Any:
    """onnxruntime's enum values (not picklable) by name; plain values as they are."""
    return ("enum", value.name) if hasattr(value, "name") and hasattr(value, "value") else value


def _enum(name: str, value: Any) -> Any:
    if isinstance(value, tuple) and value[:1] == ("enum",):
        kind = {"execution_mode": onnxruntime.ExecutionMode,
                "execution_order": onnxruntime.ExecutionOrder,
                "graph_optimization_level": onnxruntime.GraphOptimizationLevel}[name]
        return kind.__members__[value[1]]
    return value


def portable(guard: Guard) -> dict[str, Any]:
    """``guard``'s state with its session replaced by the recipe that opens it again."""
    state = guard.__getstate__()
    state["model"] = SessionRecipe.of(guard.model)
    return state


def restore(state: dict[str, Any]) -> Any:
    """The guarded session :func:`portable` describes, on a session of its own."""
    state = dict(state)
    recipe = state["model"]
    state["model"] = recipe.open() if isinstance(recipe, SessionRecipe) else recipe
    guard = Guard.__new__(Guard)
    guard.__setstate__(state)
    return guard.adapter.wrap(guard)
