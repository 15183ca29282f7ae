"""The original tool's classes, kept working on top of aimsec's own machinery:
``AIModelProtector`` (validation and request analysis on the guard and its monitor),
``AISecurityMonitor`` (threat checks per request, incidents, alert emails) and
``ChatbotThreatModeler`` (the threat model's chatbot catalogue).
"""

from .monitor import AISecurityMonitor
from .protector import AIModelProtector
from .threat_modeler import ChatbotThreatModeler

__all__ = ["AIModelProtector", "AISecurityMonitor", "ChatbotThreatModeler"]
