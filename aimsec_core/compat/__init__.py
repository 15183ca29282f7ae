"""The original tool's classes, kept working on top of aimsec's machinery.

``AISecurityMonitor`` (threat checks per request, incidents, alert emails) lives here;
``AIModelProtector`` is :mod:`aimsec_core.legacy`.
"""

from .monitor import AISecurityMonitor

__all__ = ["AISecurityMonitor"]
