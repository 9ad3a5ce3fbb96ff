"""End to end: compose train.yaml with debug=tiny, train, read the run folder back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.training import train

SEG_TRAIN = [sys.executable, "-m", "seg.cli.train"]
SEG_EVAL = [sys.executable, "-m", "seg.cli.eval"]


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shapes_root) -> Path:
    from hydra import compose, initialize_config_module

    from seg.cli.command import CONFIG_MODULE

    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "debug=tiny", f"dataset.root={shapes_root}", "dataset.crop_size=48"])
    train(cfg, run_dir)
    return run_dir


def test_run_folder_holds_checkpoints_and_metrics(tiny_run: Path) -> None:
    for name in ("last.pt", "best.pt"):
        state = torch.load(tiny_run / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "iteration", "best_miou", "config",
                "class_names", "palette"} <= set(state)
        assert state["iteration"] == 2
        assert state["class_names"][0] == "background"
        assert state["config"]["trainer"]["max_iters"] == 2  # the resolved config
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("mIoU", "pixel_acc", "mean_acc", "fw_iou", "boundary_f", "boundary_iou",
                "checkerboard", "iterations", "train_images_per_s", "wall_s"):
        assert isinstance(metrics[key], int | float)
    assert metrics["iterations"] == 2
    assert set(metrics["per_class_iou"]) >= {"background", "ring", "line"}
    assert set(metrics["per_class_boundary_f"]) == set(metrics["per_class_iou"])


def test_tensorboard_has_scalars_images_config_and_hparams(tiny_run: Path) -> None:
    acc = events(tiny_run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/mIoU", "eval_metrics/pixel_acc",
            "eval_metrics/boundary_f", "eval_metrics/boundary_iou", "eval_metrics/checkerboard",
            "eval/per_class_iou/background"} <= scalars
    # the HParams tab reads the final metrics from the eval/ scalars: no one-point cards
    assert not any(tag.startswith("hparams/") for tag in scalars)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    # TensorBoard orders cards by tag: mIoU first, then per-class IoU; the examples and the
    # confusion matrix first among the images
    ordered = sorted(scalars)
    assert ordered[0] == "eval/mIoU" and ordered[1].startswith("eval/per_class_iou/")
    assert sorted(acc.Tags()["images"])[:2] == ["eval_images/confusion_matrix",
                                                "eval_images/examples"]
    for step in range(3):  # FCN-8s has three learned upsampling steps by default
        assert f"upsampler/{step}_kernel_drift" in scalars
        assert f"upsampler/{step}_kernels" in acc.Tags()["images"]
    assert any("config" in tag for tag in acc.Tags()["tensors"])  # add_text is a tensor
    hparams_tags = {tag for tag, meta in acc.summary_metadata.items()
                    if meta.plugin_data.plugin_name == "hparams"}
    # the run's session, but no experiment summary: TensorBoard takes the first one it
    # finds as every run's, and would then hide the keys a sweep varies
    assert hparams_tags == {"_hparams_/session_start_info", "_hparams_/session_end_info"}


def test_the_kernels_come_from_an_engine_hook(compose_train) -> None:
    """The upsampler kernels above are logged by the engine's hook: a plain seg-train
    builds nothing from seg/study (only callbacks=study adds its learning curve)."""
    targets = {node._target_ for node in compose_train().callbacks.values()}
    assert targets == {"seg.engine.kernels.LearnedKernels"}


def test_resume_continues_from_the_saved_iteration(compose_train, tmp_path) -> None:
    train(compose_train(), tmp_path)
    metrics = train(compose_train("trainer.max_iters=4", "trainer.resume=true"), tmp_path)
    assert metrics["iterations"] == 4
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 4
    steps = [e.step for e in events(tmp_path).Scalars("train/loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4] and len(steps) == 4  # no step trained twice


def test_resume_without_a_checkpoint_names_the_path(compose_train, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(compose_train("trainer.resume=true"), tmp_path)


def run_cli(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_missing_dataset_root_is_one_line_naming_path_and_command(tmp_path) -> None:
    result = run_cli(SEG_TRAIN, "debug=tiny", f"hydra.run.dir={tmp_path}/run",
                     f"dataset.root={tmp_path}/nowhere", cwd=tmp_path)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert f"{tmp_path}/nowhere" in error and "make_shapes.py" in error
    assert "Traceback" not in result.stderr


def test_the_run_log_holds_what_the_console_showed(tmp_path, shapes_root) -> None:
    result = run_cli(SEG_TRAIN, "debug=tiny", f"dataset.root={shapes_root}",
                     f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    # trainer.progress=false (debug=tiny): a loss line every log_every iterations
    for line in ("iteration 1/2: loss", "iteration 2/2: loss", "final val metrics", "ring",
                 f"run folder: {tmp_path}/run"):
        assert line in log and line in result.stdout, line
    failed = run_cli(SEG_TRAIN, "debug=tiny", f"dataset.root={shapes_root}",
                     "trainer.log_every=0", f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path)
    assert failed.returncode == 1
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: trainer.log_every")
    # it failed at start-up: its folder held only Hydra's files and is gone (a run that
    # wrote something keeps its folder, and its log says why: tests/test_run_folders.py)
    assert not (tmp_path / "bad").exists()


def test_unknown_upsampler_lists_valid_names(tmp_path, shapes_root) -> None:
    result = run_cli(SEG_TRAIN, "debug=tiny", "model/upsampler=nearest_ish",
                     f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert "bilinear" in result.stderr and "transposed" in result.stderr
    result = run_cli(SEG_TRAIN, "debug=tiny", "model.upsampler.name=nearest_ish",
                     f"dataset.root={shapes_root}", f"hydra.run.dir={tmp_path}/run2", cwd=tmp_path)
    assert result.returncode != 0
    assert ("valid names are bilinear, bilinear_conv, carafe, carafe_static, dysample, "
            "dysample_static, fade, nearest, pixel_shuffle, resize_conv, sapa, sapa_free, "
            "transposed" in result.stderr)
    assert "Traceback" not in result.stderr


def test_multirun_sweep_makes_one_folder_per_run(tmp_path, shapes_root) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(SEG_TRAIN, "-m", "model/upsampler=transposed,bilinear", "debug=tiny",
                     f"dataset.root={shapes_root}", "dataset.crop_size=48",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    # named by what the sweep varies (the upsampler), not by what every run shares (the crop)
    assert [p.name for p in runs] == ["0_upsampler-transposed", "1_upsampler-bilinear"]
    assert (runs[1] / ".hydra" / "overrides.yaml").read_text().count("bilinear") == 1
    assert "1_upsampler-bilinear" in result.stdout  # the closing table
    # the sweep aggregates into a comparison (one seed: no interval yet)
    from seg.study.report import aggregate

    report = aggregate(sweep).read_text()
    assert "| fcn4s | transposed | mIoU | 1 |" in report and "too few paired seeds" in report


def test_eval_prints_the_checkpoint_table(tiny_run: Path, shapes_root, tmp_path) -> None:
    result = run_cli(SEG_EVAL, f"checkpoint={tiny_run}/checkpoints/last.pt",
                     f"dataset_root={shapes_root}", f"output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ring" in result.stdout and "mIoU" in result.stdout and "fp32" in result.stdout
    # one number per checkpoint: training evaluated its last weights in fp32 too, whatever
    # precision it trained in
    trained = json.loads((tiny_run / "metrics.json").read_text())["mIoU"]
    assert json.loads((tmp_path / "eval.json").read_text())["mIoU"] == pytest.approx(trained)


def test_an_epochs_budget_sets_max_iters_from_the_training_split(compose_train, tmp_path
                                                                 ) -> None:
    # 8 training images in batches of 2: 4 iterations an epoch, 1.5 epochs round up to 6
    metrics = train(compose_train("trainer.epochs=1.5", "trainer.eval_every=100"), tmp_path)
    assert metrics["iterations"] == 6
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["trainer"]["max_iters"] == 6  # what the schedule and a resume see


def test_same_seed_gives_the_same_run(compose_train, tmp_path) -> None:
    overrides = ("trainer.deterministic=true", "trainer.max_iters=3", "seed=7")
    first = train(compose_train(*overrides), tmp_path / "a")
    second = train(compose_train(*overrides), tmp_path / "b")
    assert first["mIoU"] == second["mIoU"]
    weights = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["model"]
               for run in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    losses = [[e.value for e in events(tmp_path / run).Scalars("train/loss")] for run in "ab"]
    assert losses[0] == losses[1]


def test_a_failed_run_does_not_stop_the_sweep_and_is_listed(tmp_path, shapes_root) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(SEG_TRAIN, "-m", f"dataset.root={tmp_path}/missing,{shapes_root}",
                     "debug=tiny", "dataset.crop_size=48", f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode != 0
    assert f"error: dataset root {tmp_path}/missing does not exist" in result.stderr
    # the run after the failure still ran (paths are left out of names, and what every
    # run shares too: nothing is left to name them but their number)
    assert (sweep / "1_run" / "metrics.json").is_file()
    from seg.study.runs import load_runs

    runs, failed = load_runs(sweep)
    assert len(runs) == 1 and failed[0].startswith("0_run (dataset.root=")


def test_encoder_lr_mult_sets_the_encoders_rate_and_zero_freezes_it(compose_train) -> None:
    from seg.errors import BadValue
    from seg.training import model_of, parameter_groups

    cfg = compose_train()
    model = model_of(cfg.model, cfg.dataset.num_classes)
    assert [len(g["params"]) for g in parameter_groups(model, 0.1, 1.0)] == \
        [len(list(model.parameters()))]
    decoder_group, encoder_group = parameter_groups(model, 0.1, 0.25)
    assert "lr" not in decoder_group and encoder_group["lr"] == pytest.approx(0.025)
    assert len(decoder_group["params"]) + len(encoder_group["params"]) == \
        len(list(model.parameters()))
    with pytest.raises(BadValue, match="encoder_lr_mult"):
        parameter_groups(model, 0.1, -1)

    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1, 0.0), lr=0.1)
    model.train()
    encoder_before = [p.detach().clone() for p in model.encoder.state_dict().values()]
    decoder_before = [p.detach().clone() for p in model.decoder.parameters()]
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    optimizer.step()
    def unchanged(before: list[torch.Tensor], after) -> bool:
        return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    # weights and batch-norm statistics alike: the frozen encoder stays in eval mode
    assert unchanged(encoder_before, model.encoder.state_dict().values())
    assert not model.encoder.training and model.decoder.training
    assert not unchanged(decoder_before, model.decoder.parameters())
    # frozen, the encoder is left out of the backward pass
    assert all(p.grad is None for p in model.encoder.parameters())
