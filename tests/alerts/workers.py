"""A worker process of tests/alerts/test_workers.py (importable for spawned processes):
guard a small scikit-learn model built from the environment and call it as three
clients, a fifth of the calls out of range."""

from __future__ import annotations

import numpy as np


def work(seed_and_calls: tuple[int, int]) -> bool:
    import aimsec_core
    from sklearn.linear_model import LogisticRegression

    seed, calls = seed_and_calls
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (100, 8)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    guarded = aimsec_core.guard(model, name="m", mode="monitor", policy=False,
                                constraints={"min_value": 0, "max_value": 1})
    for i in range(calls):
        batch = rng.uniform(0, 1, (2, 8)).astype(np.float32)
        if i % 5 == 0:
            batch[0, 0] = 5.0
        with aimsec_core.client(f"c{i % 3}"):
            guarded.predict(batch)
    return guarded.close(timeout=60)
