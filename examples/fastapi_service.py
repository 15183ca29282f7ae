"""Serve a guarded digits model over HTTP: FastAPI, uvicorn and the aimsec middleware.

At startup a logistic regression is trained on scikit-learn's bundled digits (seconds, no
download), guarded and calibrated. ``AimsecMiddleware`` says who is calling (an API key,
kept only as a keyed hash, or the address, ``X-Forwarded-For`` believed only from trusted
proxies) and answers refused calls. Only the keys in ``AIMSEC_API_KEYS`` (comma-separated;
``demo-key`` when unset) identify a caller: any other key is ignored and the address
identifies instead, so a client cannot shed its rate limit or lockout by sending a fresh
invented key with every request. The original tool's deployment flow, kept:

- a body not declared JSON (``Content-Type: application/json``) is answered 415 and not
  counted as a refused call (a web page cannot make browsers send JSON unasked);
- failed checks are refused: 422 (``non_finite_input``, ``input_format``, ...);
- high-severity threats are refused: 403 ``refused`` (adversarial input, query attacks);
  a client over its rate is told 429 with ``Retry-After``, a locked-out one 403;
- inference errors are recorded as incidents and answered 500 ``inference_failed``.

    pip install -e '.[sklearn,serve]'    # the extras it needs, from a checkout
    python examples/fastapi_service.py
    curl -s 127.0.0.1:8000/predict -H 'X-API-Key: demo-key' \\
         -H 'Content-Type: application/json' \\
         -d '{"inputs": [[0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2,
              0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1,
              12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]]}'

Pixels are the digits' own 0-16 scale. Settings: ``AIMSEC_SERVE_HOST`` (127.0.0.1),
``AIMSEC_SERVE_PORT`` (8000), ``AIMSEC_API_KEYS``, ``AIMSEC_TRUSTED_PROXIES``,
``AIMSEC_CLIENT_KEY_SECRET`` and the library's own (``SECURITY_LOG_PATH`` for the audit log, ``./security_logs``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

import aimsec_core

log = logging.getLogger("aimsec.example.service")

#: The original tool's settings dictionary, as its users keep it (its documented values).
SECURITY_CONFIG = {
    "max_requests_per_minute": 100,
    "suspicious_pattern_threshold": 0.8,
    "max_failed_attempts": 5,
    "session_timeout": 3600,
    "min_request_interval": 1.0,
}
#: The API key accepted when ``AIMSEC_API_KEYS`` is unset (the one the curl line uses).
DEMO_KEYS = ("demo-key",)
#: Largest request body read, in bytes (a 64-pixel digit is about 200).
MAX_BODY_BYTES = 1 << 20

Incident = dict[str, Any]


def train_digits_model() -> Any:
    """A logistic regression on 1,000 of the bundled digits (pixels 0-16)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    with threadpool_limits(1):  # a tiny model: worker threads would only cost here
        return LogisticRegression(max_iter=2000).fit(x[:1000], y[:1000])


def guard_digits(model: Any, *, sinks: list[aimsec_core.Sink] | None,
                 policy: dict[str, Any] | None, calibrate: bool) -> Any:
    """``model`` guarded for 8x8 digits; detectors calibrated on 500 held-out digits at 2%
    FPR (enough samples to know the rate on new data within a factor of two)."""
    guarded = aimsec_core.guard(model, name="digits", sinks=sinks, mode="enforce",
                                constraints={"min_value": 0, "max_value": 16},
                                policy=policy if policy is not None else {})
    if calibrate:
        from sklearn.datasets import load_digits

        x, _ = load_digits(return_X_y=True)
        guarded.calibrate(x[1000:1500], fpr=0.02, image_shape=(8, 8))
    return guarded


_monitor: aimsec_core.AISecurityMonitor | None = None


def log_incident(incident: Incident) -> None:
    """Where inference errors go: the incident store (``SECURITY_LOG_PATH``'s
    ``incidents.sqlite3``), through the original tool's ``AISecurityMonitor.log_incident``
    as its deployment example did; alerts follow the ``ALERT_*`` settings, else the outbox."""
    global _monitor
    if _monitor is None:
        _monitor = aimsec_core.AISecurityMonitor("digits", alert_settings={})
    _monitor.log_incident(incident)


def create_app(*, model: Any = None, sinks: list[aimsec_core.Sink] | None = None,
               policy: dict[str, Any] | None = SECURITY_CONFIG, calibrate: bool = True,
               trusted_proxies: Iterable[str] | None = None, key_secret: str | None = None,
               api_keys: Iterable[str] | None = None,
               on_incident: Callable[[Incident], None] = log_incident) -> FastAPI:
    """The service. ``model`` defaults to a freshly trained digits model; ``sinks`` (the
    guard's, and the middleware's for the requests it refuses itself) to the audit log;
    ``trusted_proxies`` and ``key_secret`` to the environment; ``api_keys`` (the
    keys that identify a caller) to ``AIMSEC_API_KEYS``, else :data:`DEMO_KEYS`."""
    if api_keys is None:
        listed = os.environ.get("AIMSEC_API_KEYS", "")
        api_keys = [k.strip() for k in listed.split(",") if k.strip()] or list(DEMO_KEYS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plain = model if model is not None else train_digits_model()
        app.state.guarded = guard_digits(plain, sinks=sinks, policy=policy,
                                         calibrate=calibrate)
        yield

    app = FastAPI(title="guarded digits", lifespan=lifespan)
    settings = {"trusted_proxies": _listed(trusted_proxies), "key_secret": key_secret,
                "api_keys": _listed(api_keys), "sinks": sinks}  # its own refusals
    # Starlette builds its middleware at the first event it serves: a bad setting would
    # only surface there, once per request as a 500. Checked here, it stops the start.
    aimsec_core.AimsecMiddleware(app, **settings)
    app.add_middleware(aimsec_core.AimsecMiddleware, **settings)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        guarded = request.app.state.guarded
        if not is_json(request.headers.get("content-type")):
            # not recorded as a refused call: see is_json
            return JSONResponse(
                {"error": "unsupported_media_type", "message": "The request body must be "
                 "JSON (Content-Type: application/json).",
                 "request_id": request.scope["aimsec"]["request_id"]}, status_code=415)
        try:
            inputs = parse_inputs(await read_body(request))
        except ClientDisconnect:  # the caller left mid-body: nobody to answer, no input
            return Response(status_code=400)
        except aimsec_core.InvalidInputError as exc:
            # refused before it could reach the model: recorded like any refused call
            raise aimsec_core.guard_of(guarded).refuse(exc) from None
        try:
            labels = await run_in_threadpool(guarded.predict, inputs)
        except aimsec_core.SecurityViolation:
            raise  # the middleware answers 422 / 403 / 429 / 503
        except Exception as exc:
            request_id = request.scope["aimsec"]["request_id"]
            # ip_address: the field log_incident reads the caller from (any identity)
            on_incident({"type": "inference_error", "model": aimsec_core.guard_of(guarded).name,
                         "ip_address": aimsec_core.current_client(), "request_id": request_id,
                         "details": f"{type(exc).__name__}: {str(exc)[:200]}"})
            return JSONResponse(
                {"error": "inference_failed", "message": "The model could not process "
                 "this request.", "request_id": request_id}, status_code=500)
        return {"predictions": [int(label) for label in labels]}

    return app


def _listed(values: Any) -> Any:
    """``values`` as a list (read twice: checked, then used), text and ``None`` as given."""
    return values if values is None or isinstance(values, (str, bytes)) else list(values)


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is JSON: ``application/json`` or ``application/*+json``
    (RFC 6839), parameters such as ``charset`` allowed.

    Browsers send a cross-site POST without asking the service first (no CORS preflight)
    only with no type or ``text/plain``, a form or multipart type; insisting on JSON keeps
    any web page from making its visitors' browsers send refused bodies that would count
    toward their addresses' lockout.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, slash, subtype = media.partition("/")
    return kind == "application" and bool(slash) and (
        subtype == "json" or (subtype.endswith("+json") and len(subtype) > len("+json")))


async def read_body(request: Request) -> bytes:
    """The request body, refused past :data:`MAX_BODY_BYTES` before it is all read."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise aimsec_core.InputTooLargeError(
                f"request body exceeds {MAX_BODY_BYTES} bytes", check="size",
                expected=MAX_BODY_BYTES, received=len(body))
    return bytes(body)


def parse_inputs(body: bytes) -> Any:
    """``{"inputs": [[64 pixels], ...]}`` -> the nested list; the guard checks the rest."""
    try:
        payload = json.loads(body)  # NaN and Infinity parse, and the guard refuses them
    # ValueError: not UTF-8, not JSON, or an integer past Python's digit limit;
    # RecursionError: arrays or objects nested past the parser's depth
    except (ValueError, RecursionError) as exc:
        raise aimsec_core.InputFormatError(
            "request body is not JSON; expected {\"inputs\": [[64 pixels], ...]}",
            check="format") from exc
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise aimsec_core.InputFormatError(
            "request body has no 'inputs'; expected {\"inputs\": [[64 pixels], ...]}",
            check="format")
    return payload["inputs"]


def serve_port() -> int:
    """``AIMSEC_SERVE_PORT`` (default 8000); :class:`aimsec_core.ConfigurationError` unless
    it is a port number, 1-65535."""
    raw = os.environ.get("AIMSEC_SERVE_PORT", "").strip() or "8000"
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise aimsec_core.ConfigurationError(
            f"AIMSEC_SERVE_PORT must be a port number from 1 to 65535; received {raw!r}")
    return int(raw)


def check_library_settings(policy: dict[str, Any] | None = SECURITY_CONFIG) -> None:
    """Read the library's own settings (``SECURITY_LOG_PATH``, ``AIMSEC_STORE_URL``, the
    incident and ``ALERT_*`` ones) as the guard made at start-up will read them: a bad
    one raises :class:`aimsec_core.ConfigurationError` here, before the model is trained
    and anything listens, instead of failing the start-up with a traceback."""
    aimsec_core.Guard(None, aimsec_core.adapter.HostArrays(None), name="digits",
                      mode="enforce", policy=policy if policy is not None else {})


def main() -> None:
    """Serve on ``AIMSEC_SERVE_HOST``:``AIMSEC_SERVE_PORT``. A bad setting ends the start
    with one line (exit status 2), before anything listens."""
    logging.basicConfig(level=logging.INFO)
    host = os.environ.get("AIMSEC_SERVE_HOST", "127.0.0.1")
    try:
        port = serve_port()
        check_library_settings()
        app = create_app()
    except aimsec_core.ConfigurationError as exc:
        print(f"fastapi_service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # proxy_headers=False: the middleware decides whom to believe about X-Forwarded-For.
    # uvicorn's own default would rewrite the peer from any header sent via 127.0.0.1.
    # lifespan="on": a start-up that fails (training, calibration) stops the server; under
    # uvicorn's default it would serve every request 500.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, lifespan="on")


if __name__ == "__main__":
    main()
