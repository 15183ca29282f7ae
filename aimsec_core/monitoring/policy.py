"""The monitoring policy: one meaning per key, defaults that never get in a training loop's way.

``guard(model, policy={...})`` takes the original tool's ``SECURITY_CONFIG`` dictionary as
it is (its five keys) and the settings below; unknown keys are a ``ConfigurationError``
naming the valid ones. ``{"tiers": {"internal": {...}}}`` overrides per-client settings for
calls made under ``aimsec_core.client(id, tier="internal")``.

Defaults: no rate limit and no minimum interval (set them to have them); lockout, repeat,
near-duplicate and extraction checks watch *identified* clients only (a call outside any
``client()`` block is ``"anonymous"``, the training/eval-loop case, and is never throttled
by them unless ``watch_anonymous`` is true). The README holds the same table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError

FAIL_OPEN, FAIL_CLOSED = "fail_open", "fail_closed"
#: Least near_duplicate_step and near_duplicate_unit: the fingerprint scales by their
#: reciprocals, which must stay finite (a subnormal value would make them inf).
_SMALLEST_SCALE = 1e-300


@dataclass(frozen=True)
class ClientRules:
    """Settings that may differ per client tier."""

    #: calls one client may make in any 60 s (moving window); None or 0: unlimited
    max_requests_per_minute: int | None = None
    #: seconds that must pass between two calls of one client; 0: no minimum
    min_request_interval: float = 0.0
    #: refused calls within ``failure_window`` that lock a client out; 0: never
    max_failed_attempts: int = 5
    #: seconds a lockout lasts (the original's session timeout)
    session_timeout: float = 3600.0
    #: seconds over which refused calls are counted towards a lockout
    failure_window: float = 600.0
    #: identical calls (same content hash) one client may repeat within ``repeat_window``
    #: before further repeats draw a ``repeat`` finding; 0: no limit
    max_repeats: int = 5
    repeat_window: float = 3600.0
    #: share of a query's fingerprint hashes a stored fingerprint must share to be a
    #: near-duplicate (Blacklight's T / S = 25 / 50); the original's
    #: ``suspicious_pattern_threshold`` key
    suspicious_pattern_threshold: float = 0.5
    near_duplicate: bool = True  #: run the near-duplicate check for these clients
    extraction: bool = True  #: run the extraction (PRADA) check for these clients
    #: watch calls made without a client identity as well (lockout and query checks)
    watch_anonymous: bool = False


@dataclass(frozen=True)
class Policy:
    """Every monitoring setting, validated once. Build with :meth:`coerce`."""

    rules: ClientRules = field(default_factory=ClientRules)
    tiers: Mapping[str, ClientRules] = field(default_factory=dict)
    #: values per hashed window (Blacklight's w); rows shorter than this are one window
    near_duplicate_window: int = 12
    #: quantization step applied to asinh(x / near_duplicate_unit) (Blacklight's q)
    near_duplicate_step: float = 0.2
    #: value scale below which quantization is linear, above it logarithmic
    near_duplicate_unit: float = 1.0
    near_duplicate_hashes: int = 50  #: hashes kept per fingerprint (Blacklight's S)
    near_duplicate_ttl: float = 3600.0  #: seconds a stored fingerprint is matched against
    near_duplicate_max_fingerprints: int = 100_000  #: stored per model, oldest replaced
    extraction_window: int = 200  #: most recent distances tested per client
    extraction_min_queries: int = 100  #: distances needed before the first test (PRADA)
    #: queries between two tests of one client: a flag comes at most this many queries
    #: late, and the Shapiro-Wilk test (a sort of ``extraction_window`` distances) is
    #: paid once per this many queries
    extraction_test_every: int = 50
    #: Shapiro-Wilk W below which a client is suspected of extraction (PRADA's delta)
    extraction_delta: float = 0.9
    extraction_set_size: int = 64  #: stored queries per client and predicted class
    extraction_clients: int = 1024  #: clients whose distance statistics are kept (LRU)
    #: ``fail_open``: serve on this process's own state when the store is unreachable,
    #: with a ``store_unavailable`` finding; ``fail_closed``: refuse those calls
    store_failure: str = FAIL_OPEN
    store_timeout: float = 0.05  #: seconds to wait for the store before giving up
    store_retry: float = 1.0  #: seconds between attempts to reach a store that failed

    def rules_for(self, tier: str | None) -> ClientRules:
        """The rules for calls of ``tier`` (the base rules for no or an unknown tier)."""
        if tier is None:
            return self.rules
        return self.tiers.get(tier, self.rules)

    @property
    def all_rules(self) -> list[ClientRules]:
        return [self.rules, *self.tiers.values()]

    @classmethod
    def coerce(cls, policy: Policy | Mapping[str, Any] | None) -> Policy:
        """``policy`` as a :class:`Policy`; raises ``ConfigurationError`` for unknown keys
        or values of the wrong type or range."""
        if isinstance(policy, Policy):
            return policy
        if policy is None:
            return cls()
        if not isinstance(policy, Mapping):
            raise ConfigurationError(
                f"policy must be a dict of settings (e.g. the original SECURITY_CONFIG); "
                f"received {type(policy).__name__}")
        settings = _plain(policy)
        tiers_raw = settings.pop("tiers", None)
        if tiers_raw is None:
            tiers_raw = {}
        rule_keys = {f.name for f in dataclasses.fields(ClientRules)}
        policy_keys = {f.name for f in dataclasses.fields(cls)} - {"rules", "tiers"}
        unknown = sorted(set(map(str, settings)) - rule_keys - policy_keys)
        if unknown:
            raise ConfigurationError(
                f"unknown policy key{'s' if len(unknown) > 1 else ''} {unknown}; valid keys: "
                f"{sorted(rule_keys | policy_keys | {'tiers'})}")
        rules = _rules({k: v for k, v in settings.items() if k in rule_keys}, ClientRules(),
                       "policy")
        if not isinstance(tiers_raw, Mapping):
            raise ConfigurationError(f"policy 'tiers' must map tier names to dicts of "
                                     f"settings; received {type(tiers_raw).__name__}")
        tiers = {}
        for name, overrides in tiers_raw.items():
            if not isinstance(name, str) or not isinstance(overrides, Mapping):
                raise ConfigurationError(
                    f"policy tier {name!r}: expected a name mapped to a dict of settings")
            bad = sorted(set(map(str, overrides)) - rule_keys)
            if bad:
                raise ConfigurationError(
                    f"policy tier {name!r}: unknown or non-tier key(s) {bad}; a tier may "
                    f"set {sorted(rule_keys)}")
            tiers[name] = _rules(_plain(overrides), rules, f"policy tier {name!r}")
        values = {k: v for k, v in settings.items() if k in policy_keys}
        out = cls(rules=rules, tiers=tiers, **values)
        out._check()
        return out

    def _check(self) -> None:
        for name in ("near_duplicate_window", "near_duplicate_hashes",
                     "near_duplicate_max_fingerprints", "extraction_window",
                     "extraction_min_queries", "extraction_test_every", "extraction_set_size",
                     "extraction_clients"):
            _require(name, getattr(self, name), int, 1, _LARGEST.get(name, math.inf))
        _require("near_duplicate_ttl", self.near_duplicate_ttl, float, 0.0, strict=True)
        # a store that may take less than a millisecond is down at every call; one
        # retried less often than hourly stays unused long after a blip
        _require("store_timeout", self.store_timeout, float, 0.001, _LARGEST["store_timeout"])
        _require("store_retry", self.store_retry, float, 0.0, _LARGEST["store_retry"],
                 strict=True)
        hashes = self.near_duplicate_max_fingerprints * self.near_duplicate_hashes
        if hashes > _INDEX_HASHES:
            raise ConfigurationError(
                f"near_duplicate_max_fingerprints x near_duplicate_hashes must be at most "
                f"{_INDEX_HASHES:,} (about 13 GB of index: 10^7 fingerprints of the "
                f"default 50 hashes); received {self.near_duplicate_max_fingerprints} x "
                f"{self.near_duplicate_hashes} = {hashes:,}")
        for name in ("near_duplicate_step", "near_duplicate_unit"):  # finite reciprocals
            _require(name, getattr(self, name), float, _SMALLEST_SCALE)
        _require("extraction_delta", self.extraction_delta, float, 0.0, 1.0)
        if self.extraction_min_queries < 3 or self.extraction_window < 3:
            raise ConfigurationError("extraction_window and extraction_min_queries must be "
                                     "at least 3 (Shapiro-Wilk needs three values)")
        if self.extraction_min_queries > self.extraction_window:
            raise ConfigurationError(
                f"extraction_min_queries ({self.extraction_min_queries}) must not exceed "
                f"extraction_window ({self.extraction_window}): the test reads at most the "
                "window's distances, so it would never run")
        if self.extraction_test_every > self.extraction_window:
            raise ConfigurationError(
                f"extraction_test_every ({self.extraction_test_every}) must not exceed "
                f"extraction_window ({self.extraction_window}): the distances that leave "
                "the window between two tests would never be tested")
        held = self.extraction_clients * self.extraction_set_size
        if held > _EXTRACTION_QUERIES:
            raise ConfigurationError(
                f"extraction_clients x extraction_set_size must be at most "
                f"{_EXTRACTION_QUERIES:,} (each client may keep extraction_set_size "
                f"queries of up to 128 values for each of 16 classes, 8 KB per query "
                f"slot: 16 GB at this bound); received {self.extraction_clients} x "
                f"{self.extraction_set_size} = {held:,}")
        if self.store_failure not in (FAIL_OPEN, FAIL_CLOSED):
            raise ConfigurationError(f"store_failure must be {FAIL_OPEN!r} or "
                                     f"{FAIL_CLOSED!r}; received {self.store_failure!r}")


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with numpy scalars as Python ones (a config read through numpy or
    pandas gives ``np.int64(100)``); anything else is left for validation to judge."""
    return {key: value.item() if type(value).__module__ == "numpy"
            and getattr(value, "ndim", None) == 0 else value
            for key, value in settings.items()}


#: Upper bounds for settings that size memory the monitor allocates (the index holds
#: ``near_duplicate_hashes`` per slot; a window of many values is one hash). The
#: fingerprints: 10^7 is about 13 GB at the default 50 hashes. The extraction window:
#: Royston's approximation of the Shapiro-Wilk coefficients holds for up to 5,000 values
#: (AS R94), and each tracked client keeps the window (8 bytes a distance). The store's
#: timeout: a socket cannot wait past time_t, and a store slower than an hour is down;
#: its retry: an hour (1000, meant as milliseconds, left it unused for 17 minutes).
_LARGEST = {"near_duplicate_window": 65_536, "near_duplicate_hashes": 4_096,
            "near_duplicate_max_fingerprints": 10_000_000,
            "extraction_set_size": 65_536, "extraction_window": 5_000,
            "store_timeout": 3600.0, "store_retry": 3600.0}


#: Most hashes the fingerprint index may hold (near_duplicate_max_fingerprints x
#: near_duplicate_hashes): about 26 bytes each in memory, and Redis' bucket count (a
#: uint32) is sized from it.
_INDEX_HASHES = 500_000_000


#: Most stored PRADA queries over all tracked clients (extraction_clients x
#: extraction_set_size): a client keeps up to 16 classes x set_size queries of 128
#: float32 values, 8 KB per unit of this product, so 16 GB at the bound (the default
#: 1,024 x 64 is 512 MB at most).
_EXTRACTION_QUERIES = 1 << 21


#: Largest count a per-client setting may hold (the stores keep counts in machine
#: integers: a failed-attempt deque's length, Redis' Lua numbers).
_LARGEST_COUNT = 2**31 - 1


def _rules(values: dict[str, Any], base: ClientRules, where: str) -> ClientRules:
    quota = values.get("max_requests_per_minute")
    if type(quota) is int and quota == 0:  # not False or 0.0: those are refused below
        values["max_requests_per_minute"] = None
    try:
        rules = dataclasses.replace(base, **values)
    except TypeError as exc:  # pragma: no cover - keys were checked
        raise ConfigurationError(f"{where}: {exc}") from exc
    if rules.max_requests_per_minute is not None:
        _require("max_requests_per_minute", rules.max_requests_per_minute, int, 1,
                 _LARGEST_COUNT, where=where, otherwise="0 or None for no limit")
    for name in ("max_failed_attempts", "max_repeats"):
        _require(name, getattr(rules, name), int, 0, _LARGEST_COUNT, where=where)
    for name in ("min_request_interval",):
        _require(name, getattr(rules, name), float, 0.0, where=where)
    for name in ("session_timeout", "failure_window", "repeat_window"):
        _require(name, getattr(rules, name), float, 0.0, strict=True, where=where)
    # 0 would make every query a near-duplicate of any stored one (it shares >= 0 hashes):
    # every identified client refused and locked out; ``near_duplicate: false`` turns it off
    _require("suspicious_pattern_threshold", rules.suspicious_pattern_threshold, float, 0.0,
             1.0, strict=True, where=where)
    for name in ("near_duplicate", "extraction", "watch_anonymous"):
        if not isinstance(getattr(rules, name), bool):
            raise ConfigurationError(f"{where}: {name} must be true or false; received "
                                     f"{getattr(rules, name)!r}")
    return rules


def _require(name: str, value: Any, kind: type, low: float, high: float = math.inf, *,
             strict: bool = False, where: str = "policy", otherwise: str = "") -> None:
    """:class:`ConfigurationError` unless ``value`` is a ``kind`` in the bounds; the
    message names ``otherwise``, the other values the setting takes, too."""
    ok_type = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else (
        isinstance(value, (int, float)) and not isinstance(value, bool))
    in_range = ok_type and _finite(value) if kind is float else ok_type
    if in_range:
        in_range = (value > low if strict else value >= low) and value <= high
    if not in_range:
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high < math.inf else "")
        also = f", or {otherwise}" if otherwise else ""
        raise ConfigurationError(f"{where}: {name} must be {'an integer' if kind is int else 'a number'} "
                                 f"{bound}{also}; received {value!r}")


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite float (an integer beyond any float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
