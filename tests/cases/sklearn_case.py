from __future__ import annotations

import numpy as np

from . import AdapterCase, digits


def _build():
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a test model, trained briefly
        return MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x, y)


CASE = AdapterCase(
    id="sklearn",
    build=_build,
    to_native=lambda x: x,
    call_plain=lambda model, x: np.asarray(model.predict_proba(x)),
    call_guarded=lambda guarded, x: np.asarray(guarded.predict_proba(x)),
    from_numpy_any=lambda a: a,
)
