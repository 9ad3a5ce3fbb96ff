"""The code's shape, as issues 12 and 24 set it: short functions, and modules that depend
on each other in one direction only (the engine knows nothing of the study or the command
line; nothing but the commands knows the study)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SEG = Path(__file__).resolve().parents[1] / "seg"
MAX_FUNCTION_LINES = 60


def modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in modules(SEG):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SEG.parent)}:{node.lineno} {node.name} "
                                f"({length} lines)")
    assert long == []


@pytest.mark.parametrize(("package", "forbidden"), [
    ("engine", ("seg.trained", "seg.study", "seg.cli")),
    ("trained", ("seg.study", "seg.cli")),
    ("study", ("seg.cli",)),
    ("models", ("seg.engine", "seg.study", "seg.cli")),
    ("data", ("seg.engine", "seg.study", "seg.cli", "seg.models")),
])
def test_packages_depend_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = [f"{path.relative_to(SEG.parent)} imports {name}"
             for path in modules(SEG / package) for name in sorted(imported(path))
             if name.startswith(forbidden)]
    assert wrong == []


def outside(*packages: str) -> list[Path]:
    """Every module of seg outside ``packages``, the top-level modules included."""
    return [path for path in modules(SEG)
            if path.relative_to(SEG).parts[0] not in packages]


def test_only_the_study_and_the_commands_import_the_study() -> None:
    """The study plugs into training from outside (configs/callbacks/): no library
    module, top level or in a package, knows it."""
    wrong = [f"{path.relative_to(SEG.parent)} imports {name}"
             for path in outside("study", "cli") for name in sorted(imported(path))
             if name == "seg.study" or name.startswith("seg.study.")]
    assert wrong == []


def test_no_function_is_too_tangled_to_follow() -> None:
    """Cyclomatic complexity at most 10 (pyproject's ruff settings), checked with ruff."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency: make install puts it into .venv"
    result = subprocess.run([ruff, "check", "--select", "C901", str(SEG)], capture_output=True,
                            text=True, cwd=SEG.parent)
    assert result.returncode == 0, result.stdout
