"""The original tool's classes, kept working on top of aimsec's own machinery."""

from .threat_modeler import ChatbotThreatModeler

__all__ = ["ChatbotThreatModeler"]
