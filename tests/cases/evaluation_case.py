"""An evaluation data set's torch MLP, guarded in monitor mode and calibrated: what the
detector tests that compare the guard with the adaptive attacks' copies start from."""

from __future__ import annotations

from typing import Any


def guarded_mlp(dataset: str, detectors: list[str], *, epochs: int = 5, name: str = "mlp",
                reference: bool = False, calibrate: bool = True) -> tuple[Any, Any, Any]:
    """``(data, model, guarded)``: ``aimsec_core.evaluation.datasets.load(dataset, 0)``,
    its torch MLP trained ``epochs`` epochs, and the guard calibrated at 5% FPR on the
    calibration split with ``detectors`` (the training split as reference data with
    ``reference``); ``calibrate=False`` leaves it uncalibrated."""
    import torch

    import aimsec_core
    from aimsec_core import digits
    from aimsec_core.evaluation import datasets

    data = datasets.load(dataset, 0)
    model = digits.torch_mlp(data.split, epochs=epochs)
    guarded = aimsec_core.guard(model, name=name, sinks=[], mode="monitor",
                                constraints=digits.constraints(
                                    "torch", sample_shape=data.sample_shape))
    if calibrate:
        guarded.calibrate(torch.from_numpy(data.split.x_calibration), fpr=0.05,
                          detectors=detectors,
                          reference=torch.from_numpy(data.split.x_train) if reference
                          else None)
    return data, model, guarded
