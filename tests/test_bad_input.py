"""Bad input is one line of error and exit status 1, and changes nothing.

A checkpoint is data: the commands that read one (seg-predict, seg-eval, seg-export) never
run code it names, and a file that is not a seg checkpoint is named as such. Settings are
checked with their key named."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from seg.cli import train as train_command
from seg.cli.command import CONFIG_MODULE, exit_on_user_error
from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.engine import save_checkpoint
from seg.engine.checkpoints import CHECKPOINT_FORMAT
from seg.errors import BadValue
from seg.trained.checkpoint import load_trained, model_from_checkpoint
from seg.training import model_of, train


class WritesAFileWhenUnpickled:
    """What a malicious pickle does: run code at load time (here, create ``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def compose_config(name: str, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def honest_state(shapes_root: Path) -> dict:
    """What seg-train writes, for an untrained model (the weights do not matter here)."""
    cfg = compose_config("train", "debug=tiny", f"dataset.root={shapes_root}")
    model = model_of(cfg.model, cfg.dataset.num_classes)
    return {
        "model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
        "class_names": list(cfg.dataset.class_names), "palette": [[i, i, i] for i in range(8)],
        "mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std), "ignore_index": 255,
        "iteration": 0, "format": CHECKPOINT_FORMAT,
    }


def test_a_checkpoint_of_an_earlier_format_is_refused_naming_it(honest_state: dict,
                                                               tmp_path: Path) -> None:
    earlier = {key: value for key, value in honest_state.items() if key != "format"}
    save_checkpoint(tmp_path / "earlier.pt", earlier)
    with pytest.raises(BadValue, match=r"is format 1, written by an earlier seg; this one "
                                       r"reads format 2 .*train it again"):
        load_trained(tmp_path / "earlier.pt")


def gadgets(tmp: Path) -> dict[str, tuple[str, dict]]:
    """Config nodes that run code when instantiated, each with where it goes."""
    victim, pickle_file = tmp / "victim.txt", tmp / "payload.pkl"
    return {
        "savetxt writes a file": ("model.encoder", {
            "_target_": "numpy.savetxt", "fname": str(tmp / "pwned"), "X": [1.0]}),
        "torch.load of a pickle": ("model.decoder", {
            "_target_": "torch.load", "f": str(pickle_file), "weights_only": False}),
        "open truncates a file": ("model.upsampler", {
            "_target_": "builtins.open", "file": str(victim), "mode": "w"}),
        "a registered name with a foreign target": ("model.encoder", {
            "_target_": "builtins.open", "name": "simple", "file": str(victim), "mode": "w"}),
        "a reader that is open()": ("dataset.val", {
            "_target_": "builtins.open", "file": str(victim), "mode": "w"}),
    }


def with_node(state: dict, where: str, node: dict) -> dict:
    crafted = copy.deepcopy(state)
    *parents, last = where.split(".")
    container = crafted["config"]
    for key in parents:
        container = container[key]
    container[last] = node
    return crafted


def run_command(command: str, checkpoint: Path, tmp: Path, shapes_root: Path, *overrides: str
                ) -> Callable:
    """The library call behind a command, wrapped as its entry point wraps it."""
    image = tmp / "image.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    calls = {
        "predict": lambda: predict(compose_config(
            "predict", f"checkpoint={checkpoint}", f"input={image}",
            f"output={tmp / 'masks'}", "progress=false", *overrides)),
        "eval": lambda: evaluate_checkpoint(compose_config(
            "eval", f"checkpoint={checkpoint}", f"dataset_root={shapes_root}", *overrides),
            tmp / "eval"),
        "export": lambda: export(compose_config(
            "export", f"checkpoint={checkpoint}", f"output={tmp / 'model.onnx'}", *overrides)),
    }
    return exit_on_user_error(calls[command])


def one_line_exit(call: Callable, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("gadget, command", [
    (gadget, command) for gadget, (where, _) in gadgets(Path()).items()
    for command in ("predict", "eval", "export")
    if command == "eval" or not where.startswith("dataset")  # only seg-eval reads it
])
def test_a_checkpoint_never_runs_the_code_it_names(
        command: str, gadget: str, honest_state: dict, tmp_path: Path, shapes_root: Path,
        capsys) -> None:
    where, node = gadgets(tmp_path)[gadget]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "payload.pkl").write_bytes(
        pickle.dumps(WritesAFileWhenUnpickled(tmp_path / "pwned")))
    checkpoint = tmp_path / "crafted.pt"
    save_checkpoint(checkpoint, with_node(honest_state, where, node))
    before = sorted(p.name for p in tmp_path.iterdir())

    err = one_line_exit(run_command(command, checkpoint, tmp_path, shapes_root), capsys)
    assert str(checkpoint) in err or where.split(".")[0] in err
    assert not (tmp_path / "pwned").exists()
    assert victim.read_text() == "precious"
    # nothing written beside the inputs the call was given
    after = sorted(p.name for p in tmp_path.iterdir())
    assert set(after) - set(before) <= {"image.png"}


def test_a_stored_transform_is_refused_never_built(honest_state: dict, tmp_path: Path,
                                                   shapes_root: Path, capsys) -> None:
    """Evaluation transforms come from the checkpoint's mean and std: a transform node
    stored beside the reader is no option of it, refused in one line, never built."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    checkpoint = tmp_path / "crafted.pt"
    save_checkpoint(checkpoint, with_node(honest_state, "dataset.val.transform", {
        "_target_": "builtins.open", "file": str(victim), "mode": "w"}))
    err = one_line_exit(run_command("eval", checkpoint, tmp_path, shapes_root), capsys)
    assert "dataset.val.transform is not an option of the voc dataset reader" in err
    assert victim.read_text() == "precious"


def test_an_honest_checkpoint_is_rebuilt(honest_state: dict, tmp_path: Path) -> None:
    checkpoint = tmp_path / "honest.pt"
    save_checkpoint(checkpoint, honest_state)
    model = model_from_checkpoint(load_trained(checkpoint))
    for key, value in model.state_dict().items():
        assert torch.equal(value, honest_state["model"][key])


@pytest.mark.parametrize("case, change, expected", [
    ("an unknown argument", ("model.decoder", "fuse", 3), "model.decoder.fuse is not an option"),
    ("a string for an int", ("model.encoder", "stem_width", "24"), "stem_width='24'"),
    ("a list of another length", ("model.encoder", "widths", [8, 8]), "widths=[8, 8]"),
    ("an unregistered upsampler", ("model.upsampler", "name", "os.system"), "upsampler.name"),
])
def test_stored_arguments_are_typed(honest_state: dict, tmp_path: Path, case: str,
                                    change: tuple, expected: str) -> None:
    where, key, value = change
    crafted = copy.deepcopy(honest_state)
    node = crafted["config"]
    for part in where.split("."):
        node = node[part]
    node[key] = value
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        model_from_checkpoint(crafted)


def test_stored_weights_path_is_never_read(honest_state: dict, tmp_path: Path) -> None:
    crafted = with_node(honest_state, "model.encoder",
                        {**honest_state["config"]["model"]["encoder"],
                         "weights": str(tmp_path / "elsewhere.pth")})
    model_from_checkpoint(crafted)  # no FileNotFoundError: the checkpoint's weights are used


@pytest.mark.parametrize("content, expected", [
    (None, "cannot be read (the file is empty)"),
    (torch.zeros(3), "holds a Tensor, not a seg checkpoint"),
    ([1, 2, 3], "holds a list, not a seg checkpoint"),
    ("state_dict", "holds only weights (a state_dict)"),
    ({"model": {}, "config": {}}, "has no class_names, palette, mean, std"),
    ("bad palette", "palette not as seg-train writes it"),
])
def test_a_file_that_is_not_a_seg_checkpoint_is_named(
        honest_state: dict, tmp_path: Path, content, expected: str, capsys) -> None:
    path = tmp_path / "other.pt"
    if content is None:
        path.write_bytes(b"")
    elif content == "state_dict":
        torch.save(honest_state["model"], path)
    elif content == "bad palette":
        torch.save({**honest_state, "palette": "voc"}, path)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_trained(path)
    err = one_line_exit(run_command("predict", path, tmp_path, tmp_path), capsys)
    assert str(path) in err


# -- settings -------------------------------------------------------------------------------

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_iters=abc", "trainer.max_iters must be a positive integer, got 'abc'"),
    ("trainer.max_iters=-5", "trainer.max_iters must be a positive integer, got -5"),
    ("trainer.eval_every=0", "trainer.eval_every must be a positive integer, got 0"),
    ("trainer.checkpoint_every=1.5", "trainer.checkpoint_every must be a positive integer"),
    ("trainer.grad_clip=-1", "trainer.grad_clip must be a positive number or null, got -1"),
    ("seed=abc", "seed must be an integer, got 'abc'"),
    ("trainer.on_nan=ignore", "trainer.on_nan='ignore': use one of stop, skip"),
    ("trainer.device=tpu", "trainer.device='tpu' is not a device"),
    pytest.param("trainer.device=cuda", "trainer.device=cuda but no CUDA GPU is visible",
                 marks=NO_GPU),
])
def test_training_settings_are_checked(compose_train, tmp_path: Path, override: str,
                                       expected: str, capsys) -> None:
    err = one_line_exit(exit_on_user_error(lambda: train(compose_train(override), tmp_path)),
                        capsys)
    assert expected in err
    assert not (tmp_path / "checkpoints").exists()


def test_a_dataset_root_that_is_a_file(compose_train, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data.zip"
    root.write_bytes(b"PK")
    err = one_line_exit(exit_on_user_error(
        lambda: train(compose_train(f"dataset.root={root}"), tmp_path)), capsys)
    assert f"dataset root {root} is a file, not a folder" in err


@pytest.mark.parametrize("command, override, expected", [
    ("predict", "overlay_alpha=5", "overlay_alpha must be a number from 0 to 1, got 5"),
    ("predict", "batch_size=0", "batch_size must be a positive integer, got 0"),
    ("predict", "inference=slide", None),  # the defaults of slide are valid
    ("predict", "inference=slide inference.crop=0",
     "inference.crop must be a positive integer or [height, width], got 0"),
    ("eval", "inference=slide inference.stride=[4]", "inference.stride must be a positive integer"),
    pytest.param("predict", "device=cuda", "device=cuda but no CUDA GPU is visible",
                 marks=NO_GPU),
    ("export", "opset=5", "opset must be an integer from 11 to 20, got 5"),
])
def test_command_settings_are_checked(honest_state: dict, tmp_path: Path, shapes_root: Path,
                                      command: str, override: str, expected: str | None,
                                      capsys) -> None:
    checkpoint = tmp_path / "honest.pt"
    save_checkpoint(checkpoint, honest_state)
    call = run_command(command, checkpoint, tmp_path, shapes_root, *override.split())
    if expected is None:
        call()
    else:
        assert expected in one_line_exit(call, capsys)


def test_export_keeps_an_existing_file(honest_state: dict, tmp_path: Path, shapes_root: Path,
                                       capsys) -> None:
    checkpoint = tmp_path / "honest.pt"
    save_checkpoint(checkpoint, honest_state)
    (tmp_path / "model.onnx").write_bytes(b"an earlier export")
    err = one_line_exit(run_command("export", checkpoint, tmp_path, shapes_root), capsys)
    assert "model.onnx exists: choose a new file name, or overwrite=true" in err
    assert (tmp_path / "model.onnx").read_bytes() == b"an earlier export"


@pytest.mark.parametrize("argv, expected", [
    (["trainer.max_iter=5"], "trainer.max_iter is not a key of this config: check its spelling"),
    (["dataset=nope"], "Could not find 'dataset/nope': choose one of ade20k, cityscapes, "
                       "folder, scenes, shapes, voc, voc_aug"),
    (["trainer.max_iters=[1"], "cannot read the override 'trainer.max_iters=[1'"),
])
def test_a_misspelt_override_is_one_line(argv: list[str], expected: str, capsys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["seg-train", *argv])
    err = one_line_exit(train_command.main, capsys)
    assert expected in err


def test_good_overrides_compose() -> None:
    import subprocess
    import sys

    # in a process of its own: Hydra's run leaves its HydraConfig set in this one
    shown = subprocess.run([sys.executable, "-m", "seg.cli.train", "trainer.max_iters=5",
                            "model/upsampler=bilinear", "--cfg", "job"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "max_iters: 5" in shown.stdout and shown.stderr == ""


def test_a_mandatory_value_left_out_is_one_line(compose_train, tmp_path: Path, capsys) -> None:
    cfg = compose_train("dataset=folder", "dataset.root=???")
    err = one_line_exit(exit_on_user_error(lambda: train(cfg, tmp_path)), capsys)
    assert "error: dataset.root is not set: pass dataset.root=PATH/TO/FOLDER" in err


@pytest.mark.slow
def test_every_command_answers_bad_input_in_one_line() -> None:
    """scripts/bad_inputs.py runs each command on each bad input in a fresh process (the
    README's reliability table): no traceback, the exit status expected, nothing changed."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "bad_inputs.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys) -> None:
    from seg.errors import BadValue, MissingSetting

    def bad_setting() -> None:
        raise BadValue("trainer.max_iters=0: use a positive number")

    assert one_line_exit(exit_on_user_error(bad_setting), capsys) == \
        "error: trainer.max_iters=0: use a positive number"
    missing = exit_on_user_error(lambda: (_ for _ in ()).throw(MissingSetting("pretrain.lr")))
    assert one_line_exit(missing, capsys) == "error: pretrain.lr"  # unquoted, unlike KeyError

    for internal in (lambda: [][0], lambda: int("not a number"), lambda: {}["key"]):
        with pytest.raises((IndexError, ValueError, KeyError)):  # not SystemExit: a traceback
            exit_on_user_error(internal)()
