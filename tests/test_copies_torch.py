"""torch: a deepcopy and a pickle of a guarded module keep the whole guard (its
calibration: the copy refuses the batch the original refuses; its sinks: the copy writes to
the same trail)."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

import aimsec_core
from aimsec_core.audit import AuditLog
from tests.cases import digits

torch = pytest.importorskip("torch")


def _round_trip(guarded):
    return pickle.loads(pickle.dumps(guarded))


@pytest.mark.parametrize("make_copy", [copy.deepcopy, _round_trip], ids=["deepcopy", "pickle"])
def test_a_torch_copy_refuses_what_the_original_refuses_and_writes_the_same_trail(
        make_copy, tmp_path):
    from tests.cases.torch_case import CASE

    x, _ = digits()
    audit = AuditLog(file=tmp_path / "audit.jsonl")
    guarded = aimsec_core.guard(copy.deepcopy(CASE.model()), sinks=[audit], policy=False,
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(CASE.to_native(x[900:1300]))
    clean = x[1400:1410]
    noisy = np.clip(clean + np.random.default_rng(0).choice([-0.3, 0.3], clean.shape),
                    0, 1).astype(np.float32)
    with pytest.raises(aimsec_core.AdversarialInputError):
        guarded(CASE.to_native(noisy))
    twin = make_copy(guarded)
    with pytest.raises(aimsec_core.AdversarialInputError):
        twin(CASE.to_native(noisy))
    decisions = [json.loads(line)["decision"] for line in audit.file.read_text().splitlines()]
    assert decisions == ["rejected", "rejected"]
