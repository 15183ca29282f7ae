"""``LaterAnswer``: how an adapter whose model answers through a callback (onnxruntime's
``run_async``) hands the outputs to the guard, whichever comes first."""

from __future__ import annotations

import threading

from aimsec_core.adapter import LaterAnswer


def test_an_answer_after_the_guard_listens_reaches_it():
    later, heard = LaterAnswer(), []
    later.listen(heard.append)
    assert heard == []
    later.answer(["outputs"])
    assert heard == [["outputs"]]


def test_an_answer_before_the_guard_listens_is_kept_for_it():
    later, heard = LaterAnswer(), []
    later.answer(["outputs"])  # the model was faster than the guard
    later.listen(heard.append)
    assert heard == [["outputs"]]


def test_a_second_answer_is_ignored():
    later, heard = LaterAnswer(), []
    later.listen(heard.append)
    later.answer(1)
    later.answer(2)
    assert heard == [1]


def test_listening_and_answering_at_once_hear_the_answer_exactly_once():
    for _ in range(100):
        later, heard = LaterAnswer(), []
        start = threading.Barrier(2)

        def answer() -> None:
            start.wait()
            later.answer("outputs")

        thread = threading.Thread(target=answer)
        thread.start()
        start.wait()
        later.listen(heard.append)
        thread.join()
        assert heard == ["outputs"]
