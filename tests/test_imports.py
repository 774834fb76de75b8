"""The floors of the house (README, Development), read statically: no module imports a package above its
own, not even lazily inside a function; and the ``mrisynth`` console script runs the top floor, ``cli``."""

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, frozenset[str]] = {
    "mrisynth": frozenset({"models", "worker", "service", "cli"}),
    "worker": frozenset({"models", "service", "cli"}),
    "service": frozenset({"models", "cli"}),
    "models": frozenset({"service", "cli"}),
}
"""Package -> the packages none of its modules may import."""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, at any depth: ``import a.b`` and ``from a.b
    import c`` both give ``a.b``. Relative imports are left out: they cannot leave their package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.append((node.lineno, node.module))
    return sorted(found)


def violations(package: str) -> list[str]:
    """``file:line: import module`` for every import of ``package``'s modules that FORBIDDEN forbids."""
    paths = sorted((ROOT / package).rglob("*.py"))
    assert paths, f"no modules under {ROOT / package}"
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in paths
        for line, module in imports(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_floor_above_its_own(package: str) -> None:
    found = violations(package)
    forbidden = ", ".join(sorted(FORBIDDEN[package]))
    assert not found, f"{package}/ may not import {forbidden}:\n" + "\n".join(found)


def test_lazy_and_from_imports_are_found(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text(
        "import os, worker.jobs as jobs\n"
        "from . import sibling\n"
        "def f():\n"
        "    if True:\n"
        "        from models.export import export_run\n"
    )
    assert imports(module) == [(1, "os"), (1, "worker.jobs"), (5, "models.export")]


def test_the_console_script_runs_the_cli_package() -> None:
    from cli.main import main

    (script,) = entry_points(group="console_scripts", name="mrisynth")
    assert script.value == "cli.main:main"
    assert script.load() is main
