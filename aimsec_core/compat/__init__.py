"""The original tool's classes, kept working on top of aimsec's own machinery:
``AISecurityMonitor`` (threat checks per request, incidents, alert emails) and
``ChatbotThreatModeler``; ``AIModelProtector`` is :mod:`aimsec_core.legacy`.
"""

from .monitor import AISecurityMonitor
from .threat_modeler import ChatbotThreatModeler

__all__ = ["AISecurityMonitor", "ChatbotThreatModeler"]
