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


# -- boundaries that hold for strings too -------------------------------------------------

CONFIGS = SEG.parent / "configs"
# Where a config may name the study's code: its presets, and the callbacks they choose.
STUDY_CONFIGS = ("compare/", "callbacks/study.yaml")


def strings_in(node: object) -> list[str]:
    """Every string of a loaded YAML document, keys and values, at any depth."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings_in([key, value])]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    return [node] if isinstance(node, str) else []


def test_only_the_study_configs_name_the_study() -> None:
    """A plain seg-train (train.yaml and the groups it chooses by default) builds nothing
    from seg/study: only the presets of configs/compare/ and callbacks=study name it."""
    import yaml

    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert CONFIGS / "callbacks" / "default.yaml" in paths  # the scan finds the configs
    wrong = [f"{path.relative_to(CONFIGS)}: {text}" for path in paths
             if not path.relative_to(CONFIGS).as_posix().startswith(STUDY_CONFIGS)
             for text in strings_in(yaml.safe_load(path.read_text()))
             if text.startswith("seg.study")]
    assert wrong == []


def docstrings(tree: ast.AST) -> set[int]:
    """The ``id`` of each docstring's constant in ``tree``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def command_module_strings(source: str) -> list[str]:
    """Every string constant of ``source`` (docstrings aside) that names a seg.cli module,
    as a command line that starts one would (``python -m seg.cli.train``)."""
    tree = ast.parse(source)
    skipped = docstrings(tree)
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skipped and node.value.startswith("seg.cli")]


def test_the_string_walker_finds_a_command_module() -> None:
    assert command_module_strings('run([sys.executable, "-m", "seg.cli.train"])') == [
        "seg.cli.train"]
    assert command_module_strings('"""Starts seg.cli.train."""\ndef f():\n    """seg.cli."""') \
        == []


def test_only_the_commands_name_a_command_module() -> None:
    """The study (or any library module) starts no command it names itself: seg-compare
    hands it the command lines (seg.study.sweep.StudyCommands)."""
    wrong = [f"{path.relative_to(SEG.parent)}: {text}" for path in outside("cli")
             for text in command_module_strings(path.read_text())]
    assert wrong == []
