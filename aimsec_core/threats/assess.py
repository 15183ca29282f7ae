"""``assess_guard``: the model-endpoint threat model of a live guard."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..api import guard_of
from ..errors import ConfigurationError
from ..guard import Guard
from .catalogue import control_ids
from .guard_controls import GUARD_CONTROLS, observe_guard
from .modeler import Assessment, ControlStatus, ThreatModeler


def assess_guard(guarded: Any, *, api_key_identity: bool | None = None,
                 declared: Iterable[str] = (), catalogue: str = "model-endpoint"
                 ) -> Assessment:
    """Assess the threats a guarded model faces, from its guard's actual configuration.

    ``guarded`` is an object returned by :func:`aimsec_core.guard` (or its
    :class:`~aimsec_core.Guard`). Every control the guard can show is read from it
    (:data:`~.guard_controls.GUARD_CONTROLS`); ``declared`` names the controls that lie
    outside the guard (verified artifacts, reviewed feedback, response integrity) that
    are in place; ``api_key_identity`` states whether an API-key middleware identifies
    clients when the guard does not know. Raises :class:`ConfigurationError` for an object
    that is not guarded, an unknown id, or a declared id the guard itself decides.
    """
    guard = guarded if isinstance(guarded, Guard) else guard_of(guarded)
    if api_key_identity is not None and not isinstance(api_key_identity, bool):
        raise ConfigurationError(f"api_key_identity must be True, False or None; received "
                                 f"{api_key_identity!r:.80}")
    modeler = ThreatModeler(catalogue)
    controls = modeler.catalogue.controls
    declared = control_ids(() if declared is None else declared, "declared")
    unknown = modeler.catalogue.unknown(declared)
    if unknown:
        raise ConfigurationError(f"unknown control ids {unknown!r:.200}; controls that can be "
                                 f"declared: {_declarable(modeler)}")
    observed_by_guard = sorted(c for c in declared if controls[c].observed == "guard")
    if observed_by_guard:
        raise ConfigurationError(
            f"{observed_by_guard} are read from the guard's configuration and cannot be "
            f"declared; controls that can be declared: {_declarable(modeler)}")
    observations = observe_guard(guard, api_key_identity)
    statuses = {}
    for cid, control in controls.items():
        if control.observed == "guard":
            seen = observations.get(cid)
            statuses[cid] = ControlStatus(
                cid, control.name, bool(seen and seen.implemented),
                seen.detail if seen else "no reading of the guard decides it", "guard")
        else:
            statuses[cid] = ControlStatus(
                cid, control.name, cid in declared,
                "declared in place" if cid in declared else "outside the guard; not declared",
                "declared")
    how = {cid: "outside the guard: once in place, declare it (declared=[...], or "
                "--declare ID)" for cid in controls}
    how.update({cid: entry.how for cid, entry in GUARD_CONTROLS.items()})
    return modeler.assess(statuses, subject=f"guard of {guard.name}", how=how)


def _declarable(modeler: ThreatModeler) -> list[str]:
    return sorted(c.id for c in modeler.catalogue.controls.values() if c.observed == "declared")
