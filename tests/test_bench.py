"""scripts/benchmarks: its generated data and both loader pipelines on a few images, the
parts of `peer` and `upsample` that need no ResNet-50, the report formats, and the targets
(checked PASS or FAIL, a failure in the exit status)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg.data.readers.voc import VOCSegmentation

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # where scripts/bench.py finds its package
try:
    from benchmarks import (
        audit,
        cli,
        data,
        decoders,
        encoders,
        flops,
        harness,
        loader,
        peak,
        peer,
        precisions,
        reference,
        sharing,
        trainer,
        training,
        upsample,
        upsamplers,
    )
    from benchmarks.targets import TARGETS, Target, check
finally:
    sys.path.remove(str(SCRIPTS))


def test_generated_files_are_valid_voc(tmp_path: Path) -> None:
    root = data.write_voc_like(tmp_path, 4)
    dataset = VOCSegmentation(root, "train")
    sizes = [dataset.load(i)[0].shape[:2] for i in range(4)]
    assert sizes == [(h, w) for w, h in data.VOC_SIZES]
    masks = [dataset.load(i)[1] for i in range(4)]
    assert all(m.max() == 255 and 0 in m for m in masks)


def test_both_pipelines_give_batches_of_the_crop(tmp_path: Path) -> None:
    root = data.write_voc_like(tmp_path, 4)
    images, targets = next(iter(reference.reference_loader(root, 2, 0, crop=64)))
    assert images.shape == (2, 3, 64, 64) and targets.shape == (2, 64, 64)
    result = loader.run(images=4, workers=0, batch_size=2, crop=64, files=4)
    assert result["ours"] > 0 and result["reference"] > 0
    assert result["ratio"] == pytest.approx(result["ours"] / result["reference"])
    assert "images/s" in loader.report(result)


def test_trainer_overhead_measures_both_loops() -> None:
    result = trainer.run(steps=6, rounds=2)
    assert result["ours"] > 0 and result["bare"] > 0
    assert len(result["ratios"]) == 2 and min(result["ratios"]) <= result["ratio"]
    assert "seg Trainer.fit" in trainer.report(result)


@pytest.mark.slow
def test_peer_runs_every_side_in_its_own_process() -> None:
    results = peer.run(steps=1)
    assert set(results) == set(peer.PEER_SIDES)
    assert all(r["images_per_s"] > 0 and r["peak_mb"] > 0 and r["flops_per_image"] > 0
               for r in results.values())
    assert results["torchvision"]["ratio"] == 1.0 and results["ours-os8-e2e"]["in_memory_ratio"]
    assert "fcn_resnet50" in peer.report(results)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H200", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_peak_bf16_flops_by_device_name(name: str, peak: float | None) -> None:
    assert flops.peak_bf16_flops(name) == peak


def test_peer_settings_per_device() -> None:
    cuda, cpu = peer.peer_settings("cuda"), peer.peer_settings("cpu")
    assert (cuda["batch"], cuda["size"], cpu["batch"], cpu["size"]) == (8, 512, 2, 256)
    assert cuda["warmup"] >= 10 and cuda["steps"] >= 30 and cpu["steps"] == 5
    assert peer.e2e_files(8, 10, 30, 400) == 320
    assert peer.e2e_files(8, 10, 100, 400) == 400
    assert peer.e2e_files(2, 0, 0, 40) == 2  # at least one batch


def test_step_flops_counts_forward_and_backward() -> None:
    conv = torch.nn.Conv2d(3, 4, 1)
    batch = data.random_batches(1, 2, 4, 4)[0]
    # forward 2 x (2 images x 16 pixels) x 3 x 4 multiply-adds; backward the weight's again
    # (the images need no gradient)
    counted = flops.step_flops(conv, batch, torch.device("cpu"), "32", torch.contiguous_format)
    assert counted == 2 * 768
    assert all(p.grad is None for p in conv.parameters())


def fake_peer_results(device: str, device_name: str) -> dict:
    rates = {"ours-fcn8s": 30.0, "ours-os8": 12.0, "ours-os8-e2e": 11.7,
             "torchvision": 10.0, "torchvision-fp32": 4.0}
    precision = "bf16" if device == "cuda" else "32"
    return {name: {"images_per_s": rate, "peak_mb": 1000.0, "flops_per_image": 1e12,
                   "precision": "32" if name == "torchvision-fp32" else precision,
                   "batch": 8, "size": 512, "steps": 30, "warmup": 10, "device": device,
                   "device_name": device_name, "workers": 8}
            for name, rate in rates.items()}


def test_peer_ratios_mfu_and_report_on_cuda() -> None:
    results = peer.add_ratios(fake_peer_results("cuda", "NVIDIA H100 80GB HBM3"))
    assert results["torchvision"]["ratio"] == 1.0 and results["ours-fcn8s"]["ratio"] == 3.0
    assert results["ours-fcn8s"]["tflops"] == pytest.approx(30.0)
    assert results["ours-fcn8s"]["mfu"] == pytest.approx(30e12 / 989.4e12)
    assert results["ours-os8-e2e"]["in_memory_ratio"] == pytest.approx(11.7 / 12.0)
    report = peer.report(results)
    assert "NVIDIA H100 80GB HBM3" in report and "989.4 TFLOP/s" in report
    assert "0.97x of in-memory" in report and "(8 workers)" in report
    assert "3.0%" in report and "3.00x" in report and "fcn_resnet50" in report
    assert "bf16 autocast, cudnn.benchmark" in report
    rows = {line.split()[-1] for line in report.splitlines() if "fp32 reference" in line}
    assert rows == {"0.40x"}


def test_peer_report_on_the_cpu_and_an_unknown_gpu() -> None:
    cpu = peer.report(peer.add_ratios(fake_peer_results("cpu", "cpu (x86_64)")))
    assert "n/a" in cpu and "%" not in cpu
    assert "fp32" in cpu and "bf16" not in cpu
    unknown = peer.add_ratios(fake_peer_results("cuda", "NVIDIA GeForce RTX 4090"))
    assert unknown["ours-os8"]["mfu"] is None
    assert "unknown for this GPU" in peer.report(unknown)


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16])
def test_upsample_paths_agree(factor: int) -> None:
    outputs, grads = [], []
    for path in upsample.UPSAMPLE_PATHS.values():
        case = upsample.upsample_case(factor, channels=3, batch=2, size=4 * factor,
                                   device=torch.device("cpu"))
        upsample.forward_backward(path, case, torch.device("cpu"), "32")
        outputs.append(path(case).detach())
        grads.append((case["x"].grad, case["weight"].grad))
    assert outputs[0].shape == (2, 3, 4 * factor, 4 * factor)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for native, phases in zip(*grads, strict=True):
        torch.testing.assert_close(native, phases, rtol=1e-4, atol=1e-4)


def test_upsample_benchmark_and_report() -> None:
    settings = {"channels": 2, "batch": 1, "size": 32, "warmup": 1, "repeats": 2,
                "precision": "32"}
    result = upsample.run(torch.device("cpu"), settings, factors=(2, 4))
    timings = result["timings"]
    assert set(timings) == {"cpu"} and set(timings["cpu"]) == {2, 4}
    assert all(t["native"] > 0 and t["phases"] > 0 for t in timings["cpu"].values())
    assert result["settings"]["precision"] == "32" and result["settings"]["batch"] == 1
    report = upsample.report({
        "timings": {"cpu": {2: {"native": 2.0, "phases": 1.0},
                            4: {"native": 1.0, "phases": 3.0}}},
        "settings": {**settings, "device_name": "cpu (x86_64)"}})
    assert "phases (2.00x)" in report and "native (3.00x)" in report
    assert "batch 1 to 32x32" in report and "fp32" in report


FAKE_COSTS = {"upsamplers": {"cpu": {
    "bilinear": {2: {"parameters": 0, "ms": 1.5, "peak_bytes": 2**20},
                 8: {"parameters": 0, "ms": 2.0, "peak_bytes": 3 * 2**20}},
    "carafe": {2: {"parameters": 7372, "ms": 12.25, "peak_bytes": 66 * 2**20},
               8: {"parameters": 116872, "ms": 30.0, "peak_bytes": 2**19}}}}}


def test_upsample_json_option(tmp_path: Path) -> None:
    """``upsample --json``: both benchmarks' figures in one file (the benchmarks faked)."""
    timings = {"cpu": {2: {"native": 2.0, "phases": 1.0}}}
    out = tmp_path / "upsample.json"
    args = cli.parse_args(["upsample", "--json", str(out), "--precision", "32"])
    seen = []

    def time_transposed(device, settings):
        seen.append(settings)
        return {"timings": timings, "settings": settings}

    def cost_upsamplers(device, settings):
        seen.append(settings)
        return {**FAKE_COSTS, "settings": settings}

    result = cli.measure_upsample(args, time_transposed, cost_upsamplers)
    assert seen == [{"precision": "32"}] * 2 and result["upsamplers"]["upsamplers"]
    written = json.loads(out.read_text())
    assert written["cpu"] == {"2": {"native": 2.0, "phases": 1.0}}
    assert written["upsamplers"]["cpu"]["carafe"]["8"] == {
        "parameters": 116872, "ms": 30.0, "peak_bytes": 2**19}


def test_upsamplers_benchmark_has_a_row_per_upsampler() -> None:
    from seg.models import UPSAMPLERS, build_upsampler

    settings = {"channels": 2, "batch": 1, "size": 16, "warmup": 1, "repeats": 1}
    costs = upsamplers.run(torch.device("cpu"), settings, factors=(2, 8))
    rows = costs["upsamplers"]["cpu"]
    assert set(rows) == set(UPSAMPLERS) >= {"bilinear", "transposed", "bilinear_conv",
                                            "resize_conv", "pixel_shuffle", "dysample",
                                            "dysample_static", "carafe", "carafe_static"}
    for name, row in rows.items():
        assert set(row) == {2, 8}
        for factor, cost in row.items():
            module = build_upsampler(name, channels=2, factor=factor)
            assert cost["parameters"] == sum(p.numel() for p in module.parameters())
            assert cost["ms"] > 0
            # at least the output (batch 1, 2 channels, 16 x 16 fp32) is allocated
            assert cost["peak_bytes"] >= 2 * 16 * 16 * 4


def test_upsamplers_report() -> None:
    settings = {**upsamplers.upsampler_settings("cpu"), "precision": "32",
                "device_name": "cpu (x86_64)"}
    report = upsamplers.report({**FAKE_COSTS, "settings": settings})
    assert "8 channels, batch 8 of ceil(112 / f)" in report and "fp32" in report
    carafe = next(line for line in report.splitlines() if "carafe" in line).split()
    assert carafe == ["carafe", "7372", "12.25", "66.0", "116872", "30.00", "0.5"]
    assert report.splitlines()[3].split() == ["x2", "x8"]


def test_steady_rate_leaves_out_the_warm_up() -> None:
    from seg.engine.hooks import Step

    rate = training.SteadyRate(warmup=1)
    seconds, images = 0.0, 0
    for iteration, step_seconds in enumerate([5.0, 1.0, 1.0, 1.0], 1):  # batches of 2
        seconds, images = seconds + step_seconds, images + 2
        rate.after_step(Step(iteration, 4, 0.0, 0.0, images / seconds))
    assert rate.images_per_s() == pytest.approx(2.0)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc only")
def test_a_side_started_by_a_grown_process_measures_its_own_memory() -> None:
    """`bench.py all` has grown by the time it starts a benchmark's side in its own
    process: the side's peak memory must be its own growth, not its parent's size."""
    side = (f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); "
            "from benchmarks.harness import resident_mb; baseline = resident_mb(); "
            "block = b'x' * (64 * 2**20); print(resident_mb() - baseline)")
    grown_parent = ("import subprocess, sys; ballast = b'x' * (800 * 2**20); "
                    f"subprocess.run([sys.executable, '-c', {side!r}], check=True)")
    printed = subprocess.run([sys.executable, "-c", grown_parent], check=True,
                             capture_output=True, text=True).stdout
    assert 60 <= float(printed) < 200


def test_benchmarks_keep_each_machines_section(tmp_path) -> None:
    write_section = harness.write_section
    path = tmp_path / "BENCHMARKS.md"
    write_section(path, "## NVIDIA H200", "peer: 1.58x")
    write_section(path, "## CPU: x86_64, 2 CPUs", "peer: 4.43x")
    write_section(path, "## CPU: x86_64, 2 CPUs", "peer: 4.50x")  # the same machine again
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "peer: 1.58x" in text and "peer: 4.50x" in text and "4.43x" not in text
    assert text.count("## ") == 2


def test_audit_counts_a_step_and_stars_the_copies_torchvision_lacks() -> None:
    """audit_side on our tiny FCN (a ResNet-50 is the benchmark's, not the suite's), and
    the report of it beside a made-up torchvision side."""
    batch = data.random_batches(1, 2, 64, 21)[0]
    ours = audit.audit_side("ours-tiny", batch, torch.device("cpu"), "bf16",
                            sides={"ours-tiny": ("model/encoder=simple", "model/decoder=fcn8s")})
    assert ours["counts"]["convolution"] > 0 and ours["counts"]["optimizer"] > 0
    assert ours["counts"].get("host_sync", 0) == 0 and ours["allocated_mb"] > 0
    assert any(what.startswith("cast: ") for what in ours["copies"])
    torchvision = {
        "counts": {"convolution": 3}, "allocated_mb": 1.0,
        "copies": {"copy: _to_copy float32 contiguous -> float32 NHWC (2, 3) in the loop": 1},
        "sync_ops": {}}
    report = audit.report({"sides": {"ours-tiny": ours, "torchvision": torchvision},
                           "batch": 2, "size": 64, "precision": "bf16",
                           "device_name": "cpu (x86_64)"})
    lines = report.splitlines()
    assert "batch 2 of 64x64, bf16" in lines[0]
    assert lines[1].split() == ["kind", "ours-tiny", "torchvision"]
    assert next(line for line in lines if line.split()[0] == "convolution").split()[2] == "3"
    starred = [line for line in lines if line.lstrip().startswith("*")]
    assert starred and all("float32 contiguous -> float32 NHWC" not in line for line in starred)


def test_encoders_benchmark_times_both_encoders() -> None:
    timm = pytest.importorskip("timm")
    # timm's small test model in place of EfficientNet-Lite0: the same code path, quicker
    sides = {"simple": ("dataset.crop_size=64",),
             "timm tf_efficientnet_lite0": ("model/encoder=timm",
                                            "model.encoder.model_name=test_efficientnet",
                                            "dataset.crop_size=64")}
    result = encoders.run(steps=2, rounds=1, sides=sides)
    assert set(result["rates"]) == {"simple", "timm tf_efficientnet_lite0"}
    assert all(rate > 0 for rate in result["rates"].values())
    small = timm.create_model("test_efficientnet", features_only=True)
    assert result["parameters"]["timm tf_efficientnet_lite0"] == sum(
        p.numel() for p in small.parameters())
    report = encoders.report(result)
    assert "simple" in report and "images/s" in report


def test_decoders_benchmark_sides_have_equal_decoder_parameters() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    plan = {"warmup": 1, "steps": 1, "repeats": 1}
    sides = {name: decoders.side("unet", name, "32", plan) for name in decoders.SIDES}
    assert sides["seg"]["decoder_parameters"] == sides["smp"]["decoder_parameters"] > 0
    assert all(side["images_per_s"] > 0 and side["inference_ms"] > 0
               for side in sides.values())
    result = {"unet": {"32": sides, "ratio": 1.0, "parameter_ratio": 1.0}}
    report = decoders.report(result)
    assert "unet (seg)" in report and "unet (smp)" in report and "fp32" in report


def test_precisions_benchmark_times_each_side_and_what_auto_trains_with(monkeypatch) -> None:
    pytest.importorskip("timm")
    monkeypatch.setattr(precisions, "WARMUP", 0)
    monkeypatch.setattr(precisions, "STEPS", 1)
    device = torch.device("cpu")
    result = precisions.run(("fcn8s",))
    names = list(precisions.sides(device))
    assert list(result["rates"]["fcn8s"]) == names and names[0] == "fp32"
    assert result["auto"] == names[-1]  # bf16 + depthwise fp32 where bf16 is native, else fp32
    rates = result["rates"]["fcn8s"]
    assert result["auto_vs_best"] == pytest.approx(rates[names[-1]] / max(rates.values()))
    assert "auto / the fastest" in precisions.report(result)


# -- targets ---------------------------------------------------------------------------------


def test_every_target_names_a_benchmark_and_a_comparison_that_exist() -> None:
    from benchmarks.targets import COMPARISONS

    assert TARGETS
    for target in TARGETS:
        assert target.benchmark in cli.COMMANDS, target
        assert target.comparison in COMPARISONS and target.device in (None, "cuda", "cpu")
    # and each peer target names a side of the benchmark
    assert {t.metric.split(".")[0] for t in TARGETS if t.benchmark == "peer"} <= set(
        peer.PEER_SIDES)


def test_peer_targets_per_device() -> None:
    cuda = peer.add_ratios(fake_peer_results("cuda", "NVIDIA H100 80GB HBM3"))
    verdicts = {v.target.metric: v for v in check("peer", cuda, "cuda")}
    assert set(verdicts) == {"ours-os8.ratio", "ours-fcn8s.ratio",
                             "ours-os8-e2e.in_memory_ratio"}
    assert verdicts["ours-fcn8s.ratio"].passed and verdicts["ours-os8-e2e.in_memory_ratio"].passed
    assert not verdicts["ours-os8.ratio"].passed  # 1.2x of torchvision, the target 1.25x
    assert verdicts["ours-os8.ratio"].line().split()[:4] == [
        "FAIL", "peer", "ours-os8.ratio", "1.200"]
    cpu = check("peer", peer.add_ratios(fake_peer_results("cpu", "cpu (x86_64)")), "cpu")
    assert [(v.target.metric, v.target.threshold, v.passed) for v in cpu] == [
        ("ours-fcn8s.ratio", 1.8, True)]


def test_a_target_not_measured_fails() -> None:
    (verdict,) = check("trainer", {"ours": 1.0}, "cpu")
    assert not verdict.passed and "FAIL  trainer ratio not measured" in verdict.line()
    below = Target("trainer", "ratio", "<=", 2.0, "a made-up ceiling")
    (verdict,) = check("trainer", {"ratio": 2.5}, "cpu", targets=[below])
    assert not verdict.passed


def fake_trainer_command(ratio: float) -> cli.Command:
    """The trainer benchmark's report and targets on a made-up result (no timed run)."""
    result = {"ours": 100.0 * ratio, "bare": 100.0, "ratio": ratio, "ratios": [ratio] * 2,
              "steps": 4, "batch": 8, "size": 160, "device": "cpu"}
    return cli.Command(lambda args: result, trainer.report, "made up", "made up")


def test_a_failing_target_prints_fail_and_exits_non_zero(capsys) -> None:
    assert cli.main(["trainer"], {"trainer": fake_trainer_command(0.5)}) == 1
    out = capsys.readouterr().out
    assert "seg Trainer.fit" in out
    assert "  FAIL  trainer ratio 0.500 (target >= 0.95)" in out
    assert "targets: 0 passed, 1 failed" in out


def test_passing_targets_print_pass_and_exit_zero(capsys, tmp_path: Path) -> None:
    """``all`` with every benchmark faked: a PASS line, 0, and the report written."""
    output = tmp_path / "BENCHMARKS.md"
    commands = {"trainer": fake_trainer_command(1.02)}
    assert cli.main(["all", "--output", str(output)], commands) == 0
    assert "  PASS  trainer ratio 1.020 (target >= 0.95)" in capsys.readouterr().out
    assert "PASS  trainer ratio 1.020" in output.read_text()


def test_peak_counts_flops_rates_and_where_a_step_goes(monkeypatch) -> None:
    monkeypatch.setattr(peak, "MODELS", {"make train": ((), 32)})
    monkeypatch.setattr(peak, "STEPS", 4)
    monkeypatch.setattr(peak, "WARMUP", 2)
    monkeypatch.setattr(peak, "PROFILED", 1)
    monkeypatch.setattr(peak, "loader_ms", lambda size: 12.5)
    result = peak.run()
    model = result["models"]["make train"]
    assert result["peak_flops"] > 1e8 and model["flops_per_image"] > 1e6
    assert model["fraction"] == pytest.approx(
        model["flops_per_image"] * model["images_per_s"] / result["peak_flops"])
    assert result["make_train_fraction"] == model["fraction"]
    profile = model["profile_ms"]
    assert {"convolution", "loss", "optimizer"} <= set(profile)
    assert all(ms > 0 for ms in profile.values())
    # the ops timed one by one are in the step's units: milliseconds, within a factor that
    # a busy machine cannot reach (beside another test worker, the profiled step has
    # taken 4.9 times the timed ones) but a unit mix-up (x1000) would
    assert 0.02 * model["step_ms"] < sum(profile.values()) < 50 * model["step_ms"]
    text = peak.report(result)
    assert "of peak" in text and "convolution" in text and "12.5 ms per batch" in text


def test_peak_loader_times_make_trains_augmentations() -> None:
    assert 0 < peak.loader_ms(32) < 2000


def test_sharing_rate_from_the_logs_second_half() -> None:
    lines = [f"[2026-12-07 10:00:{seconds:02d},500][seg.engine.hooks][INFO] - iteration "
             f"{iteration}/40: loss 1.0, lr 1e-3, 9 images/s"
             for seconds, iteration in ((1, 10), (2, 20), (4, 30), (6, 40))]
    # from iteration 20 (the middle) to 40: 20 steps of 8 images in 4 s
    assert sharing.rate_from_log("\n".join(["noise", *lines])) == pytest.approx(40.0)
    with pytest.raises(RuntimeError, match="fewer than two"):
        sharing.rate_from_log(lines[0])


def test_sharing_report_and_its_targets() -> None:
    rates = {"alone": 80.0, "two_at_once": [60.0, 62.0], "beside_busy": 50.0,
             "two_at_once_ratio": 122 / 80, "beside_busy_ratio": 50 / 80,
             "alone_vs_two": 80 / 122}
    result = {**rates, "settings": {"auto": rates, "null": {**rates, "beside_busy": 4.0}},
              "cores": 2, "data_parallel": 70.0, "data_parallel_vs_alone": 70 / 80}
    text = sharing.report(result)
    assert "60.0 +   62.0" in text and "1.52" in text
    assert "data parallel, alone: 70.0 images/s (2 processes, torchrun), 0.88x" in text
    assert "data parallel" not in sharing.report({**result, "data_parallel": None})
    verdicts = {v.target.metric: v.passed for v in check("sharing", result, "cpu")}
    assert verdicts == {"two_at_once_ratio": True, "beside_busy_ratio": True,
                        "alone_vs_two": False}
