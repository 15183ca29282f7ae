"""Guard a PyTorch model in one line and keep using it in an ordinary eval loop.

Trains a small CNN on the bundled digits (a second or two on a CPU), guards it in monitor
mode (every call is screened and audited; nothing is refused unless the model cannot run
it), then runs a DataLoader eval loop over the guarded model under ``torch.no_grad()``.
A few batches carry a "sensor glitch" (a pixel far outside [0, 1], or a NaN): they are let
through, flagged, and written to the audit log, in a temporary folder printed at the end.

    pip install -e '.[torch,sklearn]'    # the extras it needs, from a checkout
    python examples/torch_eval_loop.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import aimsec_core


def train(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: one thread is fastest and never oversubscribed
    pixels, labels = load_digits(return_X_y=True)
    x = torch.tensor(pixels / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)  # in [0, 1]
    y = torch.tensor(labels)
    model = train(x[:1400], y[:1400])

    logs = Path(tempfile.mkdtemp(prefix="aimsec-torch-")) / "logs"
    audit = aimsec_core.AuditLog(logs)
    # The one line: same module, same parameters, every forward screened and audited.
    # policy=False: an eval job is a known caller, not a black-box attacker; the per-client
    # query checks would compare each test digit with the ones before it (and, once in a
    # while, find two real digits alike).
    guarded = aimsec_core.guard(model, name="digits-cnn", mode="monitor", sinks=[audit],
                                policy=False,
                                constraints={"min_value": 0.0, "max_value": 1.0,
                                             "sample_shape": (1, 8, 8)})
    shared = all(a is b for a, b in zip(guarded.parameters(), model.parameters()))
    print(f"guarded is an nn.Module: {isinstance(guarded, nn.Module)}; "
          f"shares the original's parameters: {shared}")

    test = TensorDataset(x[1400:], y[1400:])
    correct = seen = flagged = calls = 0
    with aimsec_core.client("eval-job-7"), torch.no_grad():  # who is calling, for the audit
        for i, (xb, yb) in enumerate(DataLoader(test, batch_size=64)):
            if i % 3 == 1:
                xb = xb.clone()
                xb[0, 0, 4, 4] = 7.5 if i % 2 else float("nan")  # a sensor glitch
            logits = guarded(xb)
            calls += 1
            flagged += not guarded.last_verdict.clean
            correct += int((logits.argmax(dim=1) == yb).sum())
            seen += len(yb)
            if not guarded.last_verdict.clean:
                finding = guarded.last_verdict.findings[0]
                print(f"  batch {i}: flagged ({finding.check}) samples "
                      f"{list(finding.samples)}: {finding.reason}")

    print(f"accuracy {correct / seen:.3f} on {seen} test digits; {flagged} of {calls} calls "
          f"flagged, none refused (monitor mode)")

    with torch.no_grad():  # enforce mode would have refused the glitched batches
        strict = aimsec_core.guard(model, name="digits-cnn-strict", sinks=[audit],
                                   constraints={"min_value": 0.0, "max_value": 1.0})
        bad = x[1400:1404].clone()
        bad[2, 0, 0, 0] = np.inf
        try:
            strict(bad)
        except aimsec_core.NonFiniteInputError as error:
            print(f"enforce mode: {type(error).__name__}: {error}")

    audit.flush()
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    decisions = {d: sum(line["decision"] == d for line in lines)
                 for d in ("allowed", "flagged", "rejected")}
    print(f"audit log {audit.file}: {len(lines)} lines {decisions}; e.g. "
          f"{json.dumps({k: lines[1][k] for k in ('model', 'client', 'decision', 'flagged')})}")


if __name__ == "__main__":
    main()
