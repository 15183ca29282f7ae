"""Incidents: serious findings kept as a queryable history.

A finding at or above the incident severity becomes an occurrence (:class:`IncidentSink`,
on the predict path: enqueued, and journaled so a killed process loses none,
:mod:`.journal`); the background dispatcher folds occurrences of the
same (model, threat, client) into one :class:`Incident` with a count, in a SQLite file
(:class:`IncidentStore`). Each threat maps to OWASP ML Top 10 ids and MITRE ATLAS
techniques and mitigations (:mod:`.taxonomy`, one table). The file stays bounded
(:mod:`.retention`): resolved incidents and delivery records older than the retention are
pruned, and beyond ``max_open`` unresolved incidents new ones roll up per (model, threat).
"""

from .damaged import DamagedRows
from .model import ROLLUP_CLIENT, STATUSES, Evidence, Incident, Occurrence
from .retention import Pruned, RetentionPolicy
from .sink import IncidentSink
from .store import DamagedIncidentError, IncidentStore, IncidentStoreError
from .taxonomy import TAXONOMY, ThreatMapping, mapping_for

__all__ = ["ROLLUP_CLIENT", "STATUSES", "TAXONOMY", "DamagedIncidentError", "DamagedRows",
           "Evidence", "Incident", "IncidentSink", "IncidentStore", "IncidentStoreError",
           "Occurrence", "Pruned", "RetentionPolicy", "ThreatMapping", "mapping_for"]
