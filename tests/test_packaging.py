"""What a user installs is what the checkout runs: the wheel carries every module and data
file the code reads at run time and the entry points the registry and the ``aimsec``
command load; the source distribution carries the tests (with their helpers), examples and
scripts; every library the code imports is declared, and each "install the 'X' extra"
message names an extra that brings it. Built offline, with the installed setuptools, from
a copy of the source tree in a temporary folder."""

from __future__ import annotations

import ast
import configparser
import io
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"aimsec_core": ROOT / "aimsec_core",
            **{p.name: p for p in sorted((ROOT / "adapters").glob("aimsec_*")) if p.is_dir()}}
SHIPPED_WITH_THE_SOURCE = ("tests", "examples", "scripts")
_LEFT_BEHIND = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.py[cod]",
    ".pytest_cache", ".hypothesis", "security_logs", "aimsec_outbox")

# import name -> distribution, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "art": "adversarial-robustness-toolbox",
                 "array_api_compat": "array-api-compat", "prometheus_client": "prometheus-client"}
# imported, but brought by a declared distribution: markupsafe is Jinja2's own
# dependency (the report escapes through it), exceptiongroup the backport anyio (starlette)
# installs on Python 3.10, imported only there as a fallback
BROUGHT_BY = {"markupsafe": "jinja2", "exceptiongroup": "starlette"}


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def _declared(project: dict) -> dict[str, set[str]]:
    """Distribution names per extra, ``""`` for the base dependencies."""
    extras = {"": {_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        extras[extra] = {_name(r) for r in requirements if not r.startswith("aimsec[")}
    return extras


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _skip_without_the_build_backend() -> None:
    """The build runs offline with the installed setuptools: skipped where it is missing
    or older than ``build-system.requires`` asks (pip would fetch that one)."""
    tomllib = pytest.importorskip("tomllib")
    specifiers = pytest.importorskip("packaging.specifiers")
    from importlib.metadata import PackageNotFoundError, version

    (wanted,) = [r for r in tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["build-system"]["requires"] if _name(r) == "setuptools"]
    try:
        have = version("setuptools")
    except PackageNotFoundError:
        pytest.skip("setuptools is not installed")
    if have not in specifiers.SpecifierSet(wanted[len("setuptools"):]):
        pytest.skip(f"setuptools {have} installed; the build asks for {wanted}")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and wheel of a copy of the source tree, and a wheel built from that sdist
    (what pip does when it installs the sdist)."""
    _skip_without_the_build_backend()
    base = tmp_path_factory.mktemp("packaging")
    tree = base / "tree"
    shutil.copytree(ROOT, tree, ignore=_LEFT_BEHIND, symlinks=True)
    out = base / "out"

    def build(source: Path, kind: str) -> Path:
        code = textwrap.dedent(f"""
            import sys
            from setuptools import build_meta
            name = build_meta.build_{kind}({str(out / kind)!r})
            sys.stderr.write("BUILT " + name)
        """)
        done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return out / kind / done.stderr.rsplit("BUILT ", 1)[1].strip()

    sdist = build(tree, "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(base / "unpacked", filter="data")
    (unpacked,) = (base / "unpacked").iterdir()
    return {"tree": tree, "sdist": sdist, "unpacked": unpacked,
            "wheel": build(tree, "wheel"), "wheel_from_sdist": build(unpacked, "wheel")}


def test_the_wheel_ships_every_module_and_data_file_of_each_package(built):
    """Templates (the HTML report), threat catalogues (JSON) and py.typed are read or looked
    for at run time: each file in a package folder must be in the wheel."""
    shipped = set(zipfile.ZipFile(built["wheel"]).namelist())
    for package, folder in PACKAGES.items():
        copied = built["tree"] / folder.relative_to(ROOT)
        expected = {f"{package}/{name}" for name in _files(copied)}
        assert expected - shipped == set(), package
        assert f"{package}/py.typed" in shipped


def test_the_wheel_built_from_the_sdist_is_the_wheel_built_from_the_tree(built):
    """pip builds the sdist's wheel where no wheel fits: nothing may be lost on the way."""
    from_tree = set(zipfile.ZipFile(built["wheel"]).namelist())
    from_sdist = set(zipfile.ZipFile(built["wheel_from_sdist"]).namelist())
    assert from_tree == from_sdist


def test_the_wheel_declares_the_command_and_the_four_adapters(built):
    wheel = zipfile.ZipFile(built["wheel"])
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_file(io.StringIO(wheel.read(name).decode()))
    assert dict(points["console_scripts"]) == {"aimsec": "aimsec_core.cli:main"}
    adapters = dict(points["aimsec.adapters"])
    assert set(adapters) == {"torch", "keras", "sklearn", "onnx"}
    for target in [*adapters.values(), points["console_scripts"]["aimsec"]]:
        module, attribute = target.split(":")
        path = module.replace(".", "/")
        (source,) = [n for n in (f"{path}.py", f"{path}/__init__.py") if n in wheel.namelist()]
        tree = ast.parse(wheel.read(source))
        defined = {node.name for node in tree.body
                   if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
        defined |= {alias.asname or alias.name for node in tree.body
                    if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert attribute in defined, target


def test_the_sdist_carries_the_tests_examples_and_scripts(built):
    """It carried only tests/test_*.py (setuptools' default): no conftest.py, no
    tests/__init__.py, no helpers, so no test could be collected from it; nor the
    examples and scripts the README runs."""
    for folder in SHIPPED_WITH_THE_SOURCE:
        expected = _files(built["tree"] / folder)
        assert expected, folder
        assert expected - _files(built["unpacked"] / folder) == set(), folder


def _imports(folder: Path) -> dict[str, set[str]]:
    """Third-party top-level module -> files importing it (anywhere in them)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and not top.startswith("aimsec_"):
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_library_the_code_imports_is_declared():
    declared = _declared(_project())
    everything = set().union(*declared.values())
    for folder in PACKAGES.values():
        for module, files in _imports(folder).items():
            if module in BROUGHT_BY:
                assert _name(BROUGHT_BY[module]) in everything, module
            elif module == "tensorflow":  # the keras extra's backend, per platform
                assert declared["keras"] & {"tensorflow", "tensorflow-cpu"}
            else:
                assert _name(DISTRIBUTIONS.get(module, module)) in everything, (module, files)


def test_the_core_needs_only_its_base_dependencies_at_import():
    """Module-level imports of the core's package files are of base dependencies, or of
    modules only an optional feature imports (those carry a require() naming the extra)."""
    base = _declared(_project())[""]
    optional = {"limits", "numba", "redis"}  # ratelimit, _compiled, redis_client: lazy
    for path in (ROOT / "aimsec_core").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top.startswith("aimsec") or top in optional:
                    continue
                assert _name(DISTRIBUTIONS.get(top, top)) in base, (path.name, top)


def _require_calls():
    """(modules, extra) of every ``require((...), "extra", ...)`` in the core."""
    for path in (ROOT / "aimsec_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "require" and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)):
                modules = node.args[0]
                if isinstance(modules, ast.Name):  # a module-level tuple constant
                    tree = ast.parse(path.read_text())
                    (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                                and any(getattr(t, "id", None) == modules.id
                                        for t in n.targets)]
                    modules = value
                yield path.name, ast.literal_eval(modules), node.args[1].value


def test_each_missing_extra_message_names_an_extra_that_brings_the_module():
    declared = _declared(_project())
    calls = list(_require_calls())
    assert len(calls) >= 6
    for where, modules, extra in calls:
        assert extra in declared, (where, extra)
        for module in modules:
            assert _name(DISTRIBUTIONS.get(module, module)) in declared[extra], (where, module)


def test_each_adapter_extra_brings_the_framework_the_adapter_requires():
    declared = _declared(_project())
    for framework in ("torch", "keras", "sklearn", "onnx"):
        tree = ast.parse((PACKAGES[f"aimsec_{framework}"] / "__init__.py").read_text())
        (requires,) = [ast.literal_eval(n.value) for n in ast.walk(tree)
                       if isinstance(n, ast.Assign)
                       and any(getattr(t, "id", None) == "requires" for t in n.targets)]
        for module in requires:
            assert _name(DISTRIBUTIONS.get(module, module)) in declared[framework]


PLATFORMS = {
    "Linux x86-64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "Linux ARM": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "macOS Apple silicon": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "macOS Intel": {"sys_platform": "darwin", "platform_machine": "x86_64"},
    "Windows": {"sys_platform": "win32", "platform_machine": "AMD64"},
}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_keras_extra_brings_a_backend_on_every_platform(platform):
    """Keras 3 imports no backend of its own: the extra brought TensorFlow only where
    platform_machine was 'x86_64', so on macOS (arm64), Windows (AMD64) and Linux on ARM
    ``import keras`` failed after installing it."""
    requirements = pytest.importorskip("packaging.requirements")
    environment = {"python_version": "3.11", "python_full_version": "3.11.0",
                   "os_name": "nt" if platform == "Windows" else "posix",
                   "platform_system": "", "platform_release": "", "platform_version": "",
                   "platform_python_implementation": "CPython", "implementation_name":
                   "cpython", "implementation_version": "3.11.0", "extra": "keras",
                   **PLATFORMS[platform]}
    brought = set()
    for text in _project()["optional-dependencies"]["keras"]:
        requirement = requirements.Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            brought.add(_name(requirement.name))
    assert "keras" in brought
    assert len(brought & {"tensorflow", "tensorflow-cpu"}) == 1, brought


# first torch release with each torch.compiler function the adapters call
TORCH_COMPILER_SINCE = {"disable": (2, 1), "is_compiling": (2, 3), "is_exporting": (2, 6)}


def test_the_torch_extra_asks_for_a_torch_with_every_compiler_function_called():
    """The extra asked for torch>=2.1, while every call of a guarded module reads
    torch.compiler.is_compiling (2.3) and, compiled, torch.compiler.is_exporting (2.6):
    pip kept an older torch, and the guard failed with AttributeError."""
    called = set()
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            called |= set(re.findall(r"\btorch\.compiler\.(\w+)", path.read_text()))
    assert called, "no torch.compiler function found: the scan is stale"
    assert called <= set(TORCH_COMPILER_SINCE), called - set(TORCH_COMPILER_SINCE)
    (requirement,) = _project()["optional-dependencies"]["torch"]
    floor = re.fullmatch(r"torch>=(\d+)\.(\d+)(?:\.\d+)?", requirement)
    assert floor, requirement
    needed = max(TORCH_COMPILER_SINCE[name] for name in called)
    assert (int(floor.group(1)), int(floor.group(2))) >= needed, (requirement, needed)
