"""Rules that hold everywhere in seg/ and scripts/, read from the source itself, so that a
new module cannot break them unnoticed (docs/RELIABILITY.md):

1. one way to write a file: seg.files (atomic, never through a link, never over an input);
2. a child process never imports from the current folder (``python -P``).

Each rule's walker is first shown a breach, so that the test can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITERS_ALLOWED = {
    "seg/files.py",  # the one place that writes
    # builds the hostile inputs (links, FIFOs, gadgets) that the commands are handed
    "scripts/bad_inputs.py",
}
# what writes a file when called as an attribute (``path.write_text``, ``torch.save``)
WRITING_METHODS = {"write_text", "write_bytes", "savefig", "imwrite", "tofile", "dump",
                   "safe_dump", "savez", "savez_compressed", "savetxt"}
WRITING_FUNCTIONS = {("torch", "save"), ("np", "save"), ("numpy", "save")}
# the low-level flags that create or write a file through os.open
WRITING_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
LOCKS = {"seg/run_lock.py"}  # a lock file is held open, created with O_NOFOLLOW


def sources() -> list[Path]:
    return sorted([*(ROOT / "seg").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def inside_write_file(tree: ast.AST) -> set[int]:
    """The nodes within an argument of a ``write_file(...)`` call: what they write goes
    into the file object write_file hands them."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and called_name(node) == "write_file":
            for argument in [*node.args, *(k.value for k in node.keywords)]:
                inside |= {id(child) for child in ast.walk(argument)}
    return inside


def called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def open_mode(call: ast.Call) -> str:
    mode = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"


def looks_like_a_path(node: ast.expr) -> bool:
    """``root / "a.png"`` or ``Path(...)``: an image's ``.save`` target that is a path,
    not a file object."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return True
    return isinstance(node, ast.Call) and called_name(node) == "Path"


def writes_a_file(call: ast.Call, source: str, lock: bool = False) -> bool:
    """Whether ``call`` writes a file by itself (not through seg.files); ``lock``: a lock
    file's ``os.open`` passes."""
    func, name = call.func, called_name(call)
    if isinstance(func, ast.Name) and name == "open":
        return any(flag in open_mode(call) for flag in "wax+")
    if not isinstance(func, ast.Attribute):
        return False
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if (owner, name) in WRITING_FUNCTIONS:
        return True
    if owner == "os" and name == "open":
        flags = ast.get_source_segment(source, call)
        return not lock and any(flag in flags for flag in WRITING_FLAGS)
    if name == "save" and call.args and looks_like_a_path(call.args[0]):
        return True
    return name in WRITING_METHODS and owner not in {"files", "json", "yaml"} or (
        owner in {"json", "yaml"} and name in {"dump", "safe_dump"})


def plain_writes(source: str, filename: str = "<source>", lock: bool = False) -> list[str]:
    """``file:line`` of every call in ``source`` that writes a file outside seg.files."""
    tree = ast.parse(source, filename)
    allowed = inside_write_file(tree)
    return [f"{filename}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and id(node) not in allowed
            and writes_a_file(node, source, lock)]


BREACHES = [
    'open(path, "w").write(text)',
    'with open(path, mode="ab") as f: pass',
    "path.write_text(text)",
    "Path(p).write_bytes(data)",
    "figure.savefig(path)",
    "torch.save(state, path)",
    "np.save(path, array)",
    "json.dump(value, handle)",
    'image.save(root / "a.png")',
    "os.open(path, os.O_WRONLY | os.O_CREAT)",
    "cv2.imwrite(path, array)",
]


@pytest.mark.parametrize("breach", BREACHES)
def test_the_walker_finds_a_plain_write(breach):
    assert plain_writes(breach), breach


def test_the_walker_lets_seg_files_and_reads_pass():
    allowed = ["write_file(path, lambda f: torch.save(state, f))",
               "write_file(path, lambda f: figure.savefig(f, format='png'))",
               "write_text(path, text)", "files.write_text(path, text)",
               "open(path).read()", 'open(path, "rb")', "image.save(buffer, format='PNG')",
               "os.open(path, os.O_RDONLY)", "json.dumps(value)"]
    for source in allowed:
        assert not plain_writes(source), source


def test_every_file_is_written_through_seg_files():
    """Rule 1: everything seg writes (checkpoints, reports, figures, masks, weights, data
    it generates) goes through seg.files, which never follows a planted link and never
    leaves half a file."""
    found = [hit for path in sources() if relative(path) not in WRITERS_ALLOWED
             for hit in plain_writes(path.read_text(), relative(path),
                                     lock=relative(path) in LOCKS)]
    assert not found, ("files written without seg.files (use seg.files.write_file or "
                       f"write_text): {', '.join(found)}")


# -- rule 2: children never import from the current folder --------------------------------


def is_sys_executable(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "executable"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def unsafe_children(source: str, filename: str = "<source>") -> list[str]:
    """``file:line`` of every command list that starts ``sys.executable`` without ``-P``
    right after it: ``python -m x`` and ``python script.py`` put the current folder (or the
    script's) first on the import path, so a ``yaml.py`` there would run."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.List | ast.Tuple) and node.elts and is_sys_executable(
                node.elts[0]):
            second = node.elts[1] if len(node.elts) > 1 else None
            if not (isinstance(second, ast.Constant) and second.value == "-P"):
                found.append(f"{filename}:{node.lineno}")
    return found


def test_the_child_walker_finds_an_unsafe_child():
    assert unsafe_children('subprocess.run([sys.executable, "-m", "seg.cli.train"])')
    assert unsafe_children("subprocess.run([sys.executable, script])")
    assert not unsafe_children('subprocess.run([sys.executable, "-P", "-m", "seg.cli.x"])')


def test_every_child_python_runs_with_safe_path():
    """Rule 2: every Python process seg starts runs ``sys.executable -P``."""
    found = [hit for path in sources() if relative(path) not in WRITERS_ALLOWED
             for hit in unsafe_children(path.read_text(), relative(path))]
    assert not found, f"child processes without -P: {', '.join(found)}"
