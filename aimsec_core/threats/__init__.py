"""Threat modeling: catalogues of threats and controls as data files, one modeler, and
``assess_guard``, which reads the implemented controls from a live guard's configuration.

- ``catalogues/*.json``: the model-endpoint and chatbot catalogues (:mod:`.catalogue`
  validates them);
- :mod:`.modeler`: the risk formula and the assessment;
- :mod:`.guard_controls`: the one table from a control to the guard configuration that
  implements it;
- :mod:`.assess`: ``assess_guard``; :mod:`.export`: JSON, Markdown and a rich table.
"""

from .assess import assess_guard
from .catalogue import Catalogue, Control, Threat, load_catalogue
from .modeler import Assessment, ThreatModeler, risk_level

__all__ = ["Assessment", "Catalogue", "Control", "Threat", "ThreatModeler", "assess_guard",
           "load_catalogue", "risk_level"]
