"""Every way to run an onnxruntime session through its guarded object is screened or refused.

Screened (one audit record per call, ``last_verdict`` set, a NaN feed refused with
``NonFiniteInputError`` before the session runs):

- ``run(output_names, feed)``, positional and by keyword, with ``run_options``
- ``run`` with unknown or malformed ``output_names``: refused, still one record holding
  the feed's findings too
- ``run_with_ort_values(output_names, feed_of_ort_values)``
- ``run_async(output_names, feed, callback, user_data)``: screened before it is
  scheduled; a refused feed never reaches the callback

Refused with ``UnguardedCallError`` (the session never runs; ``aimsec_core.unguard`` gives
the plain session to callers who bypass the guard knowingly):

- ``run_with_iobinding``, ``run_with_ortvaluevector``, ``io_binding()``
- the session's private attributes read through the guarded object (``_sess``, the
  runtime itself, whose ``run`` takes any feed; ``_model_bytes`` and the rest alike)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import aimsec_core
from aimsec_core import InputFormatError, NonFiniteInputError, UnguardedCallError
from tests.cases import digits
from tests.cases.onnx_case import session


@pytest.fixture
def guarded(sink):
    return aimsec_core.guard(session(), name="paths", sinks=[sink])


def _x(nan: bool = False) -> np.ndarray:
    x = digits()[0][:3].copy()
    if nan:
        x[1, 7] = np.nan
    return x


def _run_async(g: Any, x: np.ndarray) -> Any:
    done, got = threading.Event(), []
    g.run_async(None, {"X": x}, lambda out, data, err: (got.append((out, err)), done.set()),
                None)
    assert done.wait(30) and not got[0][1]
    return got[0][0]


SCREENED: dict[str, Callable[[Any, np.ndarray], Any]] = {
    "run": lambda g, x: g.run(None, {"X": x}),
    "run(keywords)": lambda g, x: g.run(output_names=["label"], input_feed={"X": x}),
    "run(run_options)": lambda g, x: g.run(None, {"X": x}, ort.RunOptions()),
    "run_with_ort_values": lambda g, x: g.run_with_ort_values(
        None, {"X": ort.OrtValue.ortvalue_from_numpy(x)}),
    "run_async": _run_async,
}


@pytest.mark.parametrize("path", list(SCREENED))
def test_each_path_is_screened(guarded, sink, path):
    SCREENED[path](guarded, _x())
    assert sink.outcomes == ["allowed"]
    assert guarded.last_verdict is sink.events[0].verdict
    with pytest.raises(NonFiniteInputError) as caught:
        SCREENED[path](guarded, _x(nan=True))
    assert sink.outcomes == ["allowed", "rejected"]
    assert caught.value.verdict.flags == (False, True, False)


@pytest.mark.parametrize("names", [["nope"], "label", [b"label"], [None]],
                         ids=["unknown", "str", "bytes", "none"])
def test_bad_output_names_leave_one_record_with_the_feed_s_findings(guarded, sink, names):
    with pytest.raises(InputFormatError, match="output") as caught:
        guarded.run(names, {"X": _x(nan=True)})
    assert sink.outcomes == ["rejected"]
    assert caught.value.verdict.checks == ("finite", "format")


REFUSED: dict[str, Callable[[Any], Any]] = {
    "run_with_iobinding": lambda g: g.run_with_iobinding(None),
    "run_with_ortvaluevector": lambda g: g.run_with_ortvaluevector(None, [], None, [], []),
    "io_binding": lambda g: g.io_binding(),
    "_sess": lambda g: g._sess.run(None, {"X": _x(nan=True)}, None),
    "_model_bytes": lambda g: g._model_bytes,
}


@pytest.mark.parametrize("path", list(REFUSED))
def test_each_path_the_guard_cannot_screen_is_refused(guarded, sink, path):
    with pytest.raises(UnguardedCallError, match="unguard"):
        REFUSED[path](guarded)
    assert sink.outcomes == []
    assert not hasattr(guarded, "_sess")  # hasattr stays false, not an error


def test_the_plain_session_is_one_unguard_away(guarded):
    plain = aimsec_core.unguard(guarded)
    assert np.isnan(plain._sess.run(["probabilities"], {"X": _x(nan=True)}, None)[0]).any()
