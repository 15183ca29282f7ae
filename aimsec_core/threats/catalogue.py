"""Threat catalogues: data files of threats and the controls that counter them.

A catalogue is a JSON document (format ``aimsec-threat-catalogue/1``)::

    {"format": "aimsec-threat-catalogue/1", "name": "...", "title": "...",
     "controls": {"<id>": {"name": str, "description": str,
                           "observed": "guard" | "declared"}},
     "threats": [{"id": str, "category": str, "severity": "low|medium|high|critical",
                  "likelihood": "low|medium|high", "description": str, "impact": str,
                  "controls": [control ids], "owasp": ["ML01", ...],
                  "atlas": {"techniques": ["AML.T0043", ...],
                            "mitigations": ["AML.M0015", ...]}}]}

``observed: "guard"`` controls are read from a live guard's configuration
(:mod:`.guard_controls`); ``"declared"`` ones lie outside the guard and only count when
the user declares them. An empty ``owasp`` or ATLAS ``techniques`` list needs an
``owasp_note`` / ``techniques_note`` saying why (no entry of the taxonomy fits).
Catalogues are validated on load and frozen: an assessment can never change one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigurationError
from ..files import read_bounded
from ..severity import SEVERITIES

FORMAT = "aimsec-threat-catalogue/1"
LIKELIHOODS = ("low", "medium", "high")
BUILT_IN = {"model-endpoint": "model_endpoint.json", "chatbot": "chatbot.json"}
#: The longest catalogue file read (the built-in ones take a few kilobytes).
MAX_CATALOGUE_BYTES = 4 << 20
_OWASP = re.compile(r"^ML(0[1-9]|10)$")
_TECHNIQUE = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
_MITIGATION = re.compile(r"^AML\.M\d{4}$")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Control:
    id: str
    name: str
    description: str
    observed: str  #: "guard" (read from the guard's configuration) or "declared"


@dataclass(frozen=True)
class Threat:
    id: str
    category: str
    severity: str
    likelihood: str
    description: str
    impact: str
    controls: tuple[str, ...]
    owasp: tuple[str, ...]
    atlas_techniques: tuple[str, ...]
    atlas_mitigations: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def weight(self) -> int:
        """Likelihood (1–3) × impact (1–4, from the severity): the threat's share of risk."""
        return (LIKELIHOODS.index(self.likelihood) + 1) * (SEVERITIES.index(self.severity) + 1)


@dataclass(frozen=True)
class Catalogue:
    name: str
    title: str
    controls: Mapping[str, Control]  #: read-only
    threats: tuple[Threat, ...]

    def unknown(self, control_ids: set[str]) -> list[str]:
        return sorted((c for c in control_ids if c not in self.controls), key=str)


def load_catalogue(source: str | Path) -> Catalogue:
    """A built-in catalogue by name (``"model-endpoint"``, ``"chatbot"``) or one from a file
    (a regular file of at most :data:`MAX_CATALOGUE_BYTES`).

    Raises :class:`ConfigurationError` naming the file and the first problem found.
    """
    if isinstance(source, str) and source in BUILT_IN:
        text = resources.files(__package__).joinpath("catalogues", BUILT_IN[source]).read_text(
            encoding="utf-8")
        where = f"built-in catalogue {source!r}"
    else:
        if not isinstance(source, (str, Path)) or "\x00" in str(source):
            raise ConfigurationError(
                f"cannot read threat catalogue {source!r:.80}: expected a built-in name "
                f"({', '.join(BUILT_IN)}) or the path of a JSON file")
        try:  # bounded, and a regular file only: a FIFO blocked, /dev/zero filled memory
            text = read_bounded(Path(source), MAX_CATALOGUE_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read threat catalogue {source}: {exc}; expected a built-in name "
                f"({', '.join(BUILT_IN)}) or a UTF-8 JSON file of at most "
                f"{MAX_CATALOGUE_BYTES} bytes") from exc
        where = f"threat catalogue {source}"
    try:
        raw = json.loads(text)
    except RecursionError:  # arrays nested thousands deep
        raise ConfigurationError(f"{where} is not a catalogue: JSON nested too deep") from None
    except ValueError as exc:
        raise ConfigurationError(f"{where} is not valid JSON: {exc}") from exc
    return parse_catalogue(raw, where)


def parse_catalogue(raw: Any, where: str = "threat catalogue") -> Catalogue:
    """Validate a catalogue document (see the module docstring) and freeze it."""
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{where}: {problem}")

    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise fail(f"expected a JSON object with \"format\": {FORMAT!r}")
    controls_raw = raw.get("controls")
    if not isinstance(controls_raw, dict) or not controls_raw:
        raise fail("expected \"controls\": an object of control id -> {name, description, "
                   "observed}")
    controls = {}
    for cid, info in controls_raw.items():
        if not _ID.fullmatch(cid) or not isinstance(info, dict):
            raise fail(f"control {cid!r}: expected a lower_snake_case id mapped to an object")
        name, description = info.get("name"), info.get("description")
        observed = info.get("observed", "declared")
        if not (isinstance(name, str) and name and isinstance(description, str)):
            raise fail(f"control {cid!r}: expected a non-empty \"name\" and a \"description\"")
        if observed not in ("guard", "declared"):
            raise fail(f"control {cid!r}: \"observed\" must be \"guard\" or \"declared\"; "
                       f"received {observed!r}")
        controls[cid] = Control(cid, name, description, observed)
    threats_raw = raw.get("threats")
    if not isinstance(threats_raw, list) or not threats_raw:
        raise fail("expected \"threats\": a non-empty list")
    threats, seen = [], set()
    for index, item in enumerate(threats_raw):
        threat = _threat(item, controls, lambda p, i=index: fail(f"threat {i}: {p}"))
        if threat.id in seen:
            raise fail(f"threat id {threat.id!r} appears twice")
        seen.add(threat.id)
        threats.append(threat)
    name, title = raw.get("name"), raw.get("title", "")
    if not isinstance(name, str) or not name:
        raise fail("expected a non-empty \"name\"")
    return Catalogue(name, str(title), MappingProxyType(controls), tuple(threats))


def _threat(item: Any, controls: dict[str, Control], fail: Any) -> Threat:
    if not isinstance(item, dict):
        raise fail("expected an object")
    texts = {}
    for key in ("id", "category", "description", "impact"):
        value = item.get(key)
        if not isinstance(value, str) or not value:
            raise fail(f"expected a non-empty string \"{key}\"")
        texts[key] = value
    if not _ID.fullmatch(texts["id"]):
        raise fail(f"id {texts['id']!r} must be lower_snake_case")
    severity, likelihood = item.get("severity"), item.get("likelihood")
    if severity not in SEVERITIES:
        raise fail(f"severity must be one of {list(SEVERITIES)}; received {severity!r}")
    if likelihood not in LIKELIHOODS:
        raise fail(f"likelihood must be one of {list(LIKELIHOODS)}; received {likelihood!r}")
    wanted = item.get("controls")
    if not isinstance(wanted, list) or not wanted or not all(isinstance(c, str) for c in wanted):
        raise fail("expected \"controls\": a non-empty list of control ids")
    unknown = [c for c in wanted if c not in controls]
    if unknown:
        raise fail(f"names controls the catalogue does not define: {unknown}")
    atlas = item.get("atlas")
    if not isinstance(atlas, dict):
        raise fail("expected \"atlas\": {\"techniques\": [...], \"mitigations\": [...]}")
    owasp = _ids(item.get("owasp"), _OWASP, "owasp", item.get("owasp_note"), fail)
    techniques = _ids(atlas.get("techniques"), _TECHNIQUE, "atlas techniques",
                      atlas.get("techniques_note"), fail)
    mitigations = _ids(atlas.get("mitigations"), _MITIGATION, "atlas mitigations", None, fail)
    notes = tuple(str(n) for n in (item.get("owasp_note"), atlas.get("techniques_note")) if n)
    return Threat(texts["id"], texts["category"], severity, likelihood, texts["description"],
                  texts["impact"], tuple(dict.fromkeys(wanted)), owasp, techniques,
                  mitigations, notes)


def _ids(value: Any, pattern: re.Pattern[str], what: str, note: Any, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.fullmatch(v)
                                              for v in value):
        raise fail(f"{what} must be a list of ids like {pattern.pattern}; received {value!r}")
    if not value and not (isinstance(note, str) and note):
        raise fail(f"{what} is empty: name at least one id, or say why none fits in a note")
    return tuple(value)


def control_ids(value: Any, name: str) -> set[Any]:
    """``value``, an iterable of control ids, as a set (ids are checked against a
    catalogue by the caller); a mapping of id -> ``True``/``False`` gives the ids mapped
    to ``True`` (iterated as it is, ``{"rate_limiting": False}`` would count the control
    as in place). Raises :class:`ConfigurationError` for a string, whose letters are no
    ids, a mapping to other values, and anything that is not an iterable of ids."""
    if isinstance(value, (str, bytes)):
        raise ConfigurationError(f"{name} must be a set of control ids; received the string "
                                 f"{value!r:.80}")
    if isinstance(value, Mapping):
        odd = sorted((str(k) for k, v in value.items() if not isinstance(v, bool)), key=str)
        if odd:
            raise ConfigurationError(
                f"{name} must be a set of control ids (or a dict of id -> True/False); "
                f"received other values for {odd!r:.200}")
        return {k for k, v in value.items() if v}
    try:
        return set(value)
    except TypeError:  # not iterable, or holding unhashable items
        raise ConfigurationError(f"{name} must be a set of control ids; received "
                                 f"{type(value).__name__}") from None
