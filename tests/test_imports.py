"""The package's layering: the library never imports the labelling job, the LLM layer never scikit-learn."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "act_sklearn"
# `python -m act_sklearn` runs the command: the one entry point of the application
# outside it, executed only as a script, never by `import act_sklearn`
APPLICATION_ENTRY_POINTS = {PACKAGE / "__main__.py"}


def _imported_modules(path):
    """Absolute names of the act_sklearn modules a file imports (relative imports resolved)."""
    package = ".".join(("act_sklearn", *path.relative_to(PACKAGE).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def _library_files():
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "workflow" not in path.relative_to(PACKAGE).parts and path not in APPLICATION_ENTRY_POINTS
    ]


def test_the_library_never_imports_the_workflow():
    offenders = {
        str(path.relative_to(PACKAGE)): name
        for path in _library_files()
        for name in _imported_modules(path)
        if name == "act_sklearn.workflow" or name.startswith("act_sklearn.workflow.")
    }
    assert not offenders


def test_the_check_sees_relative_imports(tmp_path):
    # the scan above must be able to fail: a relative import of the workflow is caught
    probe = PACKAGE / "stats" / "_probe_for_test.py"
    probe.write_text("from ..workflow import steps\n", encoding="utf-8")
    try:
        assert "act_sklearn.workflow.steps" in _imported_modules(probe)
    finally:
        probe.unlink()


def test_the_llm_layer_and_stats_never_import_scikit_learn_or_the_estimators():
    for folder in ("llm", "stats"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            names = _imported_modules(path)
            assert not [n for n in names if n.startswith("sklearn")], path
            if folder == "stats":
                assert not [n for n in names if n.startswith("act_sklearn.") and not n.startswith("act_sklearn.stats")], path


@pytest.mark.parametrize("module", ["act_sklearn", "act_sklearn.offline", "act_sklearn.review", "act_sklearn.datasets"])
def test_importing_the_library_loads_no_workflow_module(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('act_sklearn.workflow')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_every_private_scikit_learn_import_is_in_the_compat_module():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_sklearn_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sklearn"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert "._" not in node.module and not private, f"{path}: from {node.module} import {private}"
