"""A third party adds a framework by shipping a plugin; the core never changes for it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aimsec_core
from aimsec_core import AdapterNotFoundError

PLUGIN = '''
import numpy as np
from aimsec_core import Adapter, Capabilities


class TableModel:
    """A "framework" of its own: predicts the row sums of a list of lists."""

    def predict(self, rows):
        return [sum(r) for r in rows]


class GuardedTableModel:
    def __init__(self, guard):
        self.__aimsec_guard__ = guard

    def predict(self, rows):
        guard = self.__aimsec_guard__
        return guard.call({"rows": rows}, lambda: guard.model.predict(rows))


class TableAdapter(Adapter):
    framework = "table"
    input_types = "a list of rows"
    capabilities = Capabilities(host_sequences=True)

    @classmethod
    def accepts(cls, model):
        return type(model).__name__ == "TableModel"

    def native(self, value):
        return None

    def wrap(self, guard):
        return GuardedTableModel(guard)
'''


def test_entry_point_plugin_guards_its_model(tmp_path: Path):
    (tmp_path / "table_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "table_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: table-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aimsec.adapters]\ntable = table_plugin:TableAdapter\n")
    code = textwrap.dedent("""
        import aimsec_core, table_plugin
        guarded = aimsec_core.guard(table_plugin.TableModel(), sinks=[],
                                    constraints={"max_value": 10})
        print(guarded.predict([[1, 2], [3, 4]]))
        try:
            guarded.predict([[1, 2], [3, 40]])
        except aimsec_core.ValueRangeError as exc:
            print("refused", exc.verdict.flags)
        print([a.framework for a in aimsec_core.installed_adapters()])
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[3, 7]"
    assert lines[1] == "refused (False, True)"
    assert "table" in lines[2] and "sklearn" in lines[2]


def test_unknown_model_type_gets_a_clear_error():
    with pytest.raises(AdapterNotFoundError, match="no installed adapter accepts") as caught:
        aimsec_core.guard(object())
    assert isinstance(caught.value, TypeError)
    assert "sklearn" in str(caught.value)


def test_register_adapter_refuses_non_adapters():
    with pytest.raises(TypeError, match="Adapter subclass"):
        aimsec_core.register_adapter(dict)


def test_the_error_tells_frameworks_installed_from_adapters_without_theirs(monkeypatch):
    """It listed every adapter as 'installed' on a machine without their frameworks."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(AdapterNotFoundError) as caught:
        aimsec_core.guard(object())
    message = str(caught.value)
    assert "adapters whose framework is not installed: onnx" in message
    assert "frameworks installed with an adapter: " in message and "sklearn" in message
