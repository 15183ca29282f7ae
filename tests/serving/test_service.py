"""The example FastAPI service under a real uvicorn server, driven over HTTP by httpx.

The client connects from 127.0.0.1 (an untrusted peer) or from 127.0.0.2, the loopback
address the service is told is its reverse proxy.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

import aimsec_core
from aimsec_core.incidents import IncidentStore
from aimsec_core.serving import key_identity
from tests.conftest import ListSink

from .servers import running

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_service.py"
SECRET = "test-secret-0123456789abcdef"
RAW_KEY = "sk-live-4f9a0c1d2e3b"
PROXY = "127.0.0.2"


def load_example():
    spec = importlib.util.spec_from_file_location("fastapi_service_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service():
    return load_example()


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)[0]


@pytest.fixture(scope="module")
def trained(service):
    """The example's digits model, trained once before any server runs: on a loaded 2-core
    machine, training after a server had answered calls was seen to take 10-20 s (BLAS
    threads competing), against 0.1 s before."""
    return service.train_digits_model()


@pytest.fixture(scope="module")
def served(service, trained, tmp_path_factory):
    """The example service as shipped (calibrated, audited), without rate limits:
    these tests are about identity and answers, not quotas."""
    sink = ListSink()
    audit = aimsec_core.AuditLog(tmp_path_factory.mktemp("audit"))
    app = service.create_app(model=copy.deepcopy(trained), sinks=[sink, audit], policy=None,
                             trusted_proxies=[PROXY], key_secret=SECRET, api_keys=[RAW_KEY])
    with running(app) as url:
        yield url, sink, audit


def post(url: str, rows, *, source: str = "127.0.0.1", headers=None,
         content_type: str | None = "application/json") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    sent = list(headers.items() if isinstance(headers, dict) else headers or ())
    if content_type is not None:
        sent.append(("Content-Type", content_type))
    with httpx.Client(base_url=url, transport=transport, timeout=60) as http:
        content = (rows if isinstance(rows, str)
                   else json.dumps({"inputs": np.asarray(rows).tolist()}))
        return http.post("/predict", content=content, headers=sent)


def last_client(sink: ListSink) -> str:
    return sink.events[-1].verdict.client


def test_identity_from_an_api_key_is_its_keyed_hash(served, digits):
    url, sink, audit = served
    answer = post(url, digits[:2], headers={"X-API-Key": RAW_KEY, "X-Request-ID": "req-7"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
    assert answer.headers["x-request-id"] == "req-7"
    expected = key_identity(RAW_KEY, SECRET.encode())
    assert last_client(sink) == expected
    audit.flush()
    lines = audit.file.read_text().splitlines()
    assert json.loads(lines[-1])["client"] == expected
    assert RAW_KEY not in audit.file.read_text()


def test_identity_from_a_trusted_proxy_forwarded_for(served, digits):
    url, sink, _ = served
    answer = post(url, digits[:1], source=PROXY,
                  headers={"X-Forwarded-For": "203.0.113.50, 198.51.100.7"})
    assert answer.status_code == 200, answer.text
    assert last_client(sink) == "198.51.100.7"  # the right-most hop the proxy vouches for


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(served, digits):
    url, sink, _ = served
    answer = post(url, digits[:1], headers={"X-Forwarded-For": "198.51.100.7"})
    assert answer.status_code == 200, answer.text
    assert last_client(sink) == "127.0.0.1"


def test_hostile_headers_over_the_wire(served, digits):
    url, sink, _ = served
    headers = [("X-Forwarded-For", b"\xff\xfe, 300.1.1.1"), ("X-Forwarded-For", b"[::1"),
               ("X-API-Key", b"k" * 5000), ("X-Request-ID", "\u00e9t\u00e9".encode())]
    answer = post(url, digits[:1], source=PROXY, headers=headers)
    assert answer.status_code == 200, answer.text
    assert last_client(sink) == PROXY  # nothing forwarded could be believed
    assert len(answer.headers["x-request-id"]) == 32


def test_several_api_keys_are_400_and_audited_for_the_address(served, digits):
    # the middleware's own 400 left no line in the trail: the guard never saw the request
    url, sink, audit = served
    answer = post(url, digits[:1], headers=[("X-API-Key", RAW_KEY), ("X-API-Key", "sk-other"),
                                            ("X-Request-ID", "req-two-keys")])
    assert answer.status_code == 400 and answer.json()["error"] == "ambiguous_api_key"
    assert sink.outcomes[-1] == "rejected" and last_client(sink) == "127.0.0.1"
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    assert [(r["model"], r["client"], r["decision"]) for r in lines
            if r["request_id"] == "req-two-keys"] == [("aimsec.serving", "127.0.0.1",
                                                       "rejected")]
    assert RAW_KEY not in audit.file.read_text() and "sk-other" not in audit.file.read_text()


def test_nan_input_is_422_and_recorded_for_its_client(served, digits):
    url, sink, _ = served
    row = ", ".join(["NaN"] + ["0"] * 63)
    answer = post(url, f'{{"inputs": [[{row}]]}}', headers={"X-API-Key": RAW_KEY})
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "non_finite_input"
    assert set(body) == {"error", "message", "request_id"}
    assert answer.headers["x-request-id"] == body["request_id"]
    assert sink.outcomes[-1] == "rejected"
    assert last_client(sink) == key_identity(RAW_KEY, SECRET.encode())
    assert RAW_KEY not in answer.text


@pytest.mark.parametrize("content, code", [
    ("not json", "input_format"), ('{"rows": []}', "input_format"),
    ('{"inputs": [[1, 2, 3]]}', "input_format"), ('{"inputs": [[99] ]}', "input_format"),
    # JSON nested past the parser's recursion limit, and an integer past Python's digit
    # limit for str -> int: both were a 500
    ("[" * 100_000, "input_format"), ('{"inputs": [[' + "9" * 5000 + "]]}", "input_format"),
])
def test_malformed_requests_are_422_and_recorded(served, content, code):
    url, sink, _ = served
    before = len(sink.events)
    answer = post(url, content, headers={"X-API-Key": RAW_KEY})
    assert answer.status_code == 422 and answer.json()["error"] == code
    # one record for the request, whether the body or the guard refused it
    assert len(sink.events) == before + 1 and sink.outcomes[-1] == "rejected"
    verdict = sink.events[-1].verdict
    assert verdict.client == key_identity(RAW_KEY, SECRET.encode())
    assert verdict.request_id == answer.json()["request_id"]
    assert [f.check for f in verdict.findings] in (["format"], ["shape"], ["range"])


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/jsonp", "json", "",
])
def test_a_body_that_is_not_declared_json_is_415_and_never_counted(served, content_type):
    # A web page can make its visitors' browsers POST these without a CORS preflight
    # ("simple requests"); each refused body counted toward the lockout of the visitor's
    # address, so any page could lock out the users of an internal service.
    url, sink, _ = served
    before = len(sink.events)
    nan = '{"inputs": [[' + ", ".join(["NaN"] * 64) + "]]}"
    answer = post(url, nan, content_type=content_type)
    assert answer.status_code == 415
    assert answer.json() == {"error": "unsupported_media_type", "request_id":
                             answer.headers["x-request-id"], "message":
                             "The request body must be JSON (Content-Type: application/json)."}
    assert len(sink.events) == before


@pytest.mark.parametrize("n, content_type", list(enumerate([
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/problem+json", "application/json ;charset=UTF-8",
])))
def test_json_media_types_are_served(served, digits, n, content_type):
    url, _, _ = served  # a client of its own each: repeated digits would look like a probe
    answer = post(url, digits[n:n + 1], content_type=content_type, source=PROXY,
                  headers={"X-Forwarded-For": f"198.51.100.{100 + n}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_the_limit_is_422_and_recorded(served, service, chunked):
    url, sink, _ = served
    size = service.MAX_BODY_BYTES + 1
    content = (iter([b" " * 65536] * (size // 65536 + 1)) if chunked
               else b'{"inputs": [[' + b"0," * (size // 2) + b"0]]}")
    before = len(sink.events)
    with httpx.Client(base_url=url, timeout=60) as http:
        answer = http.post("/predict", content=content,
                           headers={"Content-Type": "application/json", "X-API-Key": RAW_KEY})
    assert answer.status_code == 422 and answer.json()["error"] == "input_too_large"
    assert len(sink.events) == before + 1
    assert [f.check for f in sink.events[-1].verdict.findings] == ["size"]


def test_a_caller_leaving_mid_body_is_no_crash(service, trained):
    """A client that closes the connection halfway through its body made the endpoint
    raise (``ClientDisconnect``): one server-log traceback per aborted upload, a cheap way
    to flood the error log."""
    sink = ListSink()
    app = service.create_app(model=copy.deepcopy(trained), sinks=[sink], policy=None,
                             calibrate=False, key_secret=SECRET, api_keys=[RAW_KEY])
    raised: list[BaseException] = []
    finished = threading.Event()

    async def watched(scope, receive, send):
        try:
            await app(scope, receive, send)
        except BaseException as error:
            raised.append(error)
            raise
        finally:
            if scope["type"] == "http":
                finished.set()

    with running(watched) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 100000\r\n\r\n{\"inputs\": [[0, 1")
        assert finished.wait(timeout=120)
    assert raised == []
    assert sink.events == []  # nothing was decided about an input that never arrived


def test_high_severity_threat_is_refused_without_internals(served):
    url, sink, _ = served
    noise = np.random.default_rng(0).integers(0, 17, size=(1, 64))
    answer = post(url, noise, headers={"X-API-Key": RAW_KEY})
    assert answer.status_code == 403
    assert answer.json()["error"] == "refused"
    assert sink.events[-1].verdict.severity in ("high", "critical")
    for internal in ("suspicion", "sparsity", "threshold", "digits"):
        assert internal not in answer.text


def test_inference_error_becomes_an_incident_and_a_generic_500(service, digits):
    from sklearn.dummy import DummyClassifier

    class Crashing(DummyClassifier):
        def predict(self, X):
            raise RuntimeError("CUDA out of memory at layer 3")

    incidents = []
    model = Crashing().fit(digits[:50], np.arange(50) % 10)
    app = service.create_app(model=model, calibrate=False, sinks=[], key_secret=SECRET,
                             api_keys=[RAW_KEY], on_incident=incidents.append)
    with running(app) as url:
        answer = post(url, digits[:1], headers={"X-API-Key": RAW_KEY, "X-Request-ID": "r-9"})
    assert answer.status_code == 500
    assert answer.json() == {"error": "inference_failed", "request_id": "r-9",
                             "message": "The model could not process this request."}
    (incident,) = incidents
    assert incident["type"] == "inference_error"
    assert incident["ip_address"] == key_identity(RAW_KEY, SECRET.encode())
    assert incident["request_id"] == "r-9"
    assert "RuntimeError" in incident["details"]
    assert RAW_KEY not in json.dumps(incident)


def test_inference_errors_are_stored_under_their_client(service, digits, tmp_path,
                                                        monkeypatch):
    """The shipped incident path (``log_incident``, the incident database): the incident
    was passed its caller as ``client``, a field ``log_incident`` does not read, so every
    client's inference errors were stored, grouped and alerted as one ``anonymous``'s."""
    from sklearn.dummy import DummyClassifier

    class Crashing(DummyClassifier):
        def predict(self, X):
            raise RuntimeError("CUDA out of memory at layer 3")

    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
    monkeypatch.setattr(service, "_monitor", None)
    model = Crashing().fit(digits[:50], np.arange(50) % 10)
    app = service.create_app(model=model, calibrate=False, sinks=[], key_secret=SECRET,
                             api_keys=[RAW_KEY])
    try:
        with running(app) as url:
            assert post(url, digits[:1], headers={"X-API-Key": RAW_KEY}).status_code == 500
            assert post(url, digits[:1]).status_code == 500
    finally:
        if service._monitor is not None:
            service._monitor.close()  # written to the database
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    clients = [incident.client for incident in store.incidents(model="digits")]
    store.close()
    assert sorted(clients) == sorted([key_identity(RAW_KEY, SECRET.encode()), "127.0.0.1"])


def test_rate_limited_and_blocked_answers_through_uvicorn():
    """The 429 / 403 answers over real HTTP, from an app that raises the errors itself."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/limited":
            raise aimsec_core.RateLimitedError("120 calls in 60 s; limit 100", retry_after=12.4)
        if scope["path"] == "/unknown":  # an error made without a retry_after: 0.0
            raise aimsec_core.RateLimitedError("limit 100")
        raise aimsec_core.ClientBlockedError("5 refused calls; locked out", retry_after=3599.5)

    with running(aimsec_core.AimsecMiddleware(app, key_secret=SECRET)) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            limited = http.get("/limited", headers={"X-API-Key": RAW_KEY})
            blocked = http.get("/blocked")
            unknown = http.get("/unknown")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "13"
    assert limited.json()["error"] == "rate_limited"
    assert blocked.status_code == 403 and blocked.headers["retry-after"] == "3600"
    assert blocked.json()["error"] == "client_blocked"
    # 'Retry-After: 0' told the refused caller to retry at once, into the same refusal
    assert unknown.status_code == 429 and unknown.headers["retry-after"] == "1"
    for answer in (limited, blocked, unknown):
        assert "limit 100" not in answer.text and "5 refused" not in answer.text


def test_rate_limit_and_lockout_from_the_guard_policy(service, trained, digits):
    """End to end against the guard's own policy: the fourth call in a minute is 429, and
    after two refused calls the client is locked out (403) even with valid input."""
    sink = ListSink()
    policy = {"max_requests_per_minute": 3, "min_request_interval": 0,
              "max_failed_attempts": 2, "session_timeout": 600}
    app = service.create_app(model=copy.deepcopy(trained), sinks=[sink], policy=policy,
                             calibrate=False, key_secret=SECRET, api_keys=["flooder", "prober"])
    with running(app) as url:
        flood = [post(url, digits[:1], headers={"X-API-Key": "flooder"}) for _ in range(4)]
        assert [a.status_code for a in flood] == [200, 200, 200, 429]
        assert int(flood[-1].headers["retry-after"]) >= 1
        nan = '{"inputs": [[' + ", ".join(["NaN"] * 64) + "]]}"
        refused = [post(url, nan, headers={"X-API-Key": "prober"}) for _ in range(2)]
        assert [a.status_code for a in refused] == [422, 422]
        locked = post(url, digits[:1], headers={"X-API-Key": "prober"})
        assert locked.status_code == 403
        assert locked.json()["error"] == "client_blocked"
        assert int(locked.headers["retry-after"]) >= 1
    seen = {e.verdict.client for e in sink.events}
    assert key_identity("prober", SECRET.encode()) in seen
    assert not {"flooder", "prober"} & seen


def test_inventing_a_key_per_request_does_not_shed_the_rate_limit(service, trained, digits,
                                                                  monkeypatch):
    """A fresh made-up key per request was a fresh client each time: never rate limited.
    As shipped (``AIMSEC_API_KEYS`` unset) only ``demo-key`` identifies."""
    monkeypatch.delenv("AIMSEC_API_KEYS", raising=False)
    sink = ListSink()
    policy = {"max_requests_per_minute": 3, "min_request_interval": 0}
    app = service.create_app(model=copy.deepcopy(trained), sinks=[sink], policy=policy,
                             calibrate=False, key_secret=SECRET)
    with running(app) as url:
        answers = [post(url, digits[:1], headers={"X-API-Key": f"invented-{i}"})
                   for i in range(4)]
        demo = post(url, digits[:1], headers={"X-API-Key": "demo-key"})
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert demo.status_code == 200  # a listed key is its own client
    assert {e.verdict.client for e in sink.events} \
        == {"127.0.0.1", key_identity("demo-key", SECRET.encode())}


# -- settings: a bad one stops the start, never a server that answers 500 ----------------


@pytest.mark.parametrize("variable, value", [
    ("AIMSEC_TRUSTED_PROXIES", "bogus"), ("AIMSEC_CLIENT_KEY_SECRET", "short"),
    ("AIMSEC_IPV6_PREFIX", "200"),
])
def test_a_bad_setting_fails_create_app_not_every_request(service, monkeypatch, variable,
                                                          value):
    # Starlette builds its middleware at the first event: the error surfaced there, and
    # under uvicorn's default lifespan mode the server started and answered every request
    # 500 with a traceback in its log.
    monkeypatch.setenv(variable, value)
    with pytest.raises(aimsec_core.ConfigurationError, match=variable if variable !=
                       "AIMSEC_TRUSTED_PROXIES" else "bogus"):
        service.create_app(model=object(), calibrate=False, sinks=[])


def test_settings_given_as_iterators_are_read_once_and_kept(service, trained, digits):
    app = service.create_app(model=copy.deepcopy(trained), calibrate=False, sinks=[],
                             policy=None, key_secret=SECRET,
                             api_keys=iter([RAW_KEY]), trusted_proxies=iter([PROXY]))
    with running(app) as url:
        answer = post(url, digits[:1], source=PROXY,
                      headers={"X-API-Key": RAW_KEY, "X-Forwarded-For": "198.51.100.9"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("port", ["abc", "99999", "0", "-1", "８０"])
def test_a_bad_port_is_one_line_and_nothing_starts(service, monkeypatch, capsys, port):
    monkeypatch.setenv("AIMSEC_SERVE_PORT", port)
    assert "AIMSEC_SERVE_PORT" in _refused_start(service, monkeypatch, capsys)


def _refused_start(service, monkeypatch, capsys) -> str:  # type: ignore[no-untyped-def]
    """Run the service's ``main`` with uvicorn replaced; assert it ended with status 2, one
    message and no server started; return what it printed on standard error."""
    started = []
    monkeypatch.setattr(service.uvicorn, "run", lambda *a, **k: started.append(k))
    with pytest.raises(SystemExit) as exited:
        service.main()
    assert exited.value.code == 2 and not started
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_main_stops_when_its_start_up_fails(service, monkeypatch):
    # uvicorn's default lifespan mode logs a failed start-up as "unsupported" and serves
    # anyway, every request then a 500 (no model in app.state)
    monkeypatch.delenv("AIMSEC_SERVE_PORT", raising=False)
    monkeypatch.setattr(service, "train_digits_model", lambda: object())
    started = []
    monkeypatch.setattr(service.uvicorn, "run", lambda *a, **k: started.append(k))
    service.main()
    assert started[0]["lifespan"] == "on" and started[0]["proxy_headers"] is False


def test_a_bad_library_setting_is_one_line_and_nothing_starts(service, monkeypatch, capsys,
                                                              tmp_path):
    # the guard is made at start-up: a bad SECURITY_LOG_PATH failed it with a traceback
    # and uvicorn's exit status 3, after the model had been trained
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "file" / "logs"))
    monkeypatch.delenv("AIMSEC_SERVE_PORT", raising=False)
    assert "audit log's folder" in _refused_start(service, monkeypatch, capsys)
