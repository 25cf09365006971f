"""The package's floors (``mia_utils.LAYERS``) are kept: imports only go down, none hides in a
function without saying why, and importing the package or the command line loads no plotting
library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mia_utils

PACKAGE = Path(mia_utils.__file__).parent
FLOOR = {name: i for i, floor in enumerate(mia_utils.LAYERS) for name in floor}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" or p.parent != PACKAGE)


def _top(path: Path) -> str:
    """The package module a file belongs to: ``attacks`` for attacks/sima.py, ``io`` for io.py."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _package_imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported package module, line, inside a function, the source line) of every import of
    the package in ``path``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    here = parts[:-1] if parts[-1] != "__init__" else parts[:-1]  # the file's own package, below mia_utils
    lines = path.read_text().splitlines()
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.level:
                base = here[:len(here) - (child.level - 1)] if child.level > 1 else here
                dotted = [*base, *(child.module.split(".") if child.module else [])]
                names = [dotted] if child.module else [[*dotted, a.name] for a in child.names]
                for name in names:
                    if name:
                        out.append((name[0], child.lineno, inner, lines[child.lineno - 1]))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                for mod in mods:
                    if mod.split(".")[0] == "mia_utils" and len(mod.split(".")) > 1:
                        out.append((mod.split(".")[1], child.lineno, inner, lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return out


def test_every_module_has_a_floor():
    tops = {_top(p) for p in _modules()} - {"__init__", "__main__"}
    assert tops <= set(FLOOR), f"modules missing from mia_utils.LAYERS: {sorted(tops - set(FLOOR))}"
    assert set(FLOOR) <= tops, f"LAYERS names modules that do not exist: {sorted(set(FLOOR) - tops)}"


def test_imports_only_go_down():
    bad = []
    for path in _modules():
        own = _top(path)
        if own not in FLOOR:
            continue
        for mod, line, _, _ in _package_imports(path):
            if mod != own and FLOOR.get(mod, -1) >= FLOOR[own]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {mod} (floor {FLOOR.get(mod)}) "
                           f"from floor {FLOOR[own]}")
    assert not bad, "\n".join(bad)


def test_no_package_import_hides_in_a_function():
    # allowed only with a comment on the line that says why (a heavy optional library)
    bad = [f"{path.relative_to(PACKAGE)}:{line}: {text.strip()}" for path in _modules()
           for mod, line, inner, text in _package_imports(path) if inner and "#" not in text]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("code", ["import mia_utils", "import mia_utils.cli"])
def test_no_plotting_library_on_import(code):
    probe = (f"{code}; import sys; "
             "print(sorted(m for m in ('matplotlib', 'seaborn', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{code} loads {out.strip()}"


def test_a_name_at_the_top_is_the_module_s_own():
    assert mia_utils.load_model is mia_utils.specs.load_model
    assert mia_utils.DataError is mia_utils.errors.DataError is mia_utils.data.DataError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mia_utils.nope  # noqa: B018
