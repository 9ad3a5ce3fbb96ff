"""compare.md's findings over budgets, controls and classes, from fabricated sweeps whose
runs carry a history (every evaluation during training), and the cost timer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from seg.study import cost
from seg.study.cost import PeakMemory, forward_ms, forward_peak_bytes
from seg.study.report import aggregate
from seg.study.runs import LONGER_DIR, load_runs
from seg.study.stats import (
    above_majority_check,
    convergence_check,
    longer_budget_check,
    majority_class_miou,
)
from tests.test_compare import CLASSES, write_run

BUDGETS = (2, 6, 25, 75, 100)  # of a 100-iteration run: 2, 6 and 25 are "early" (<= 1/4)
JITTER = (-0.002, 0.0, 0.002)  # per seed: differences of 0 hold 0, of 0.05 clear it


def bilinear_curve(seed: int, at_three_quarters: float = 0.50) -> dict[int, float]:
    """A learning curve that flattens out: 0.5 points from 3/4 of the run to its end."""
    return {2: 0.10 + 0.01 * seed, 6: 0.20 + 0.01 * seed, 25: 0.30 + 0.01 * seed,
            75: at_three_quarters + 0.01 * seed, 100: 0.505 + 0.01 * seed}


def fabricate(sweep: Path, offsets: dict[str, dict[int, float]], decoders=("fcn8s",),
              at_three_quarters: float = 0.50) -> None:
    """3 seeds of bilinear and of each upsampler of ``offsets`` (iteration -> its mIoU
    above bilinear's, the same seed), per decoder."""
    number = 0
    for decoder in decoders:
        for seed in range(3):
            base = bilinear_curve(seed, at_three_quarters)
            write_run(sweep, number, "bilinear", seed, base[100], decoder, base)
            number += 1
            for upsampler, offset in offsets.items():
                curve = {i: v + offset.get(i, 0.0) + JITTER[seed] for i, v in base.items()}
                write_run(sweep, number, upsampler, seed, curve[100], decoder, curve)
                number += 1


EARLY_ONLY = {2: 0.05, 6: 0.05, 25: 0.05}
END_ONLY = {75: 0.05, 100: 0.05}


def verdict_of(report: str, decoder: str, upsampler: str) -> str:
    line = next(line for line in report.splitlines()
                if line.startswith(f"- {decoder}, {upsampler}: "))
    return line.split("**")[1]


def test_csv_has_a_row_per_run_and_budget(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": EARLY_ONLY})
    aggregate(tmp_path)
    with open(tmp_path / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * len(BUDGETS)  # upsamplers x seeds x budgets
    assert {(r["upsampler"], r["seed"], int(r["iteration"])) for r in rows} == {
        (u, str(s), i) for u in ("bilinear", "transposed") for s in range(3) for i in BUDGETS}
    first = rows[0]
    assert list(first)[:10] == ["decoder", "upsampler", "seed", "iteration", "mIoU",
                                "pixel_acc", "mean_acc", "boundary_f", "boundary_iou",
                                "checkerboard"]
    assert [k for k in first if "/" in k] == ([f"iou/{c}" for c in CLASSES]
                                              + [f"boundary_f/{c}" for c in CLASSES])
    assert first["iou/square"] == ""  # absent from val: undefined, not 0
    assert float(first["mIoU"]) == pytest.approx(0.10)  # bilinear seed 0 at iteration 2


def test_verdicts_in_words(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": EARLY_ONLY, "pixel_shuffle": END_ONLY,
                         "resize_conv": {**EARLY_ONLY, **END_ONLY}, "transposed_frozen": {},
                         "transposed_kaiming": {100: -0.05},
                         "nearest": {2: 0.05, 25: -0.05, 100: -0.05},
                         "carafe": {2: 0.05, 25: -0.05}})
    report = aggregate(tmp_path).read_text()
    assert verdict_of(report, "fcn8s", "transposed") == "learns faster"
    assert verdict_of(report, "fcn8s", "pixel_shuffle") == "ends better"
    assert verdict_of(report, "fcn8s", "resize_conv") == "both: learns faster and ends better"
    assert verdict_of(report, "fcn8s", "transposed_frozen") == (
        "neither: no significant difference early or at the end")
    assert verdict_of(report, "fcn8s", "transposed_kaiming") == "neither: ends worse"
    # ahead at one early budget and behind at another is neither faster nor slower
    assert verdict_of(report, "fcn8s", "nearest") == (
        "neither: ends worse; early, ahead at one budget and behind at another")
    assert verdict_of(report, "fcn8s", "carafe") == (
        "neither: no significant difference at the end; early, ahead at one budget and "
        "behind at another")
    # the per-budget table: bold where the interval leaves 0 out
    budgets = report.split("## At every budget")[1]
    row = next(line for line in budgets.splitlines() if line.startswith("| fcn8s | transposed |"))
    assert row.count("**+5.0**") == 3 and "| it 2 | it 6 | it 25 | it 75 | it 100 |" in report
    # sections in reading order
    order = ["Every run:", "## Convergence check", "## Learned vs bilinear, in words",
             "## At the end of training", "## At every budget",
             "## Does the gain survive its control?", "## Where the gain is",
             "## Inference cost", "Failed runs:"]
    assert [report.index(title) for title in order] == sorted(
        report.index(title) for title in order)


@pytest.mark.parametrize(("at_three_quarters", "passed", "change"),
                         [(0.50, True, "change +0.50 points: PASS"),
                          (0.45, False, "change +5.50 points: FAIL")])
def test_convergence_check(tmp_path: Path, at_three_quarters: float, passed: bool,
                           change: str) -> None:
    fabricate(tmp_path, {"transposed": {}}, at_three_quarters=at_three_quarters)
    runs, _ = load_runs(tmp_path)
    outcome, line = convergence_check(runs)
    assert outcome is passed
    # mean over seeds 0, 1, 2 (+0, +1, +2 points): at 3/4 of the run and at the end
    assert f"{100 * at_three_quarters + 1:.2f} % at iteration 75" in line
    assert "51.50 % at 100 (the end)" in line
    assert change in line
    assert line in aggregate(tmp_path).read_text()


def test_convergence_not_checked_without_its_runs_or_budget(tmp_path: Path) -> None:
    fabricate(tmp_path / "fcn32s", {"transposed": {}}, decoders=("fcn32s",))
    runs, _ = load_runs(tmp_path / "fcn32s")
    assert convergence_check(runs) == (
        None, "Convergence check (bilinear fcn8s, val mIoU, mean over seeds): not checked, "
              "the sweep has no bilinear fcn8s runs")
    write_run(tmp_path / "old", 0, "bilinear", 0, 0.5)  # no history: final evaluation only
    runs, _ = load_runs(tmp_path / "old")
    outcome, line = convergence_check(runs)
    assert outcome is None and "not checked, no evaluation at 3/4 of the run" in line


def test_controls_section_reads_each_control(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": END_ONLY, "bilinear_conv": {100: 0.05},
                         "transposed_kaiming": {}, "transposed_full": END_ONLY})
    report = aggregate(tmp_path).read_text()
    section = report.split("## Does the gain survive its control?")[1].split("##")[0]
    # (every upsampler's runs share one jitter per seed: their differences are exact)
    assert ("| fcn8s | transposed - bilinear_conv | parameter count | 100 / 100 | 3 | +0.00 "
            "[+0.00, +0.00] | bilinear_conv matches transposed: the gain may be the extra "
            "parameters |") in section
    assert ("the bilinear start matters: transposed beats its random start "
            "(transposed_kaiming) by 5.00 points") in section
    assert "transposed_full matches transposed: a full C x C kernel adds nothing" in section
    assert "no significant gain to explain" not in section  # transposed ends 5 points up


def test_each_content_aware_upsampler_meets_its_static_twin_and_bilinear_conv(
        tmp_path: Path) -> None:
    fabricate(tmp_path, {"dysample": END_ONLY, "dysample_static": {}, "carafe": {},
                         "carafe_static": {}, "bilinear_conv": {}})
    section = aggregate(tmp_path).read_text().split("## Does the gain survive")[1]
    assert ("| fcn8s | dysample - dysample_static | content-awareness | 100 / 100 | 3 | "
            "+5.00 [+5.00, +5.00] | content-awareness helps: dysample beats its "
            "input-independent twin dysample_static by 5.00 points |") in section
    assert ("dysample beats bilinear_conv, bilinear followed by a learned filter, by 5.00 "
            "points") in section
    assert "carafe_static matches carafe: a learned pattern the same everywhere" in section
    assert "| fcn8s | carafe - bilinear_conv | learned parameters |" in section


def write_longer_run(sweep: Path, number: int, seed: int, miou: float, decoder: str) -> None:
    """A bilinear run of ``seed`` trained twice the study's 100 iterations, in the folder
    seg-compare runs them into."""
    longer = sweep / LONGER_DIR
    write_run(longer, number, "bilinear", seed, miou, decoder,
              {150: miou - 0.001, 200: miou})
    config = OmegaConf.load(longer / str(number) / ".hydra" / "config.yaml")
    config.trainer.max_iters = 200
    OmegaConf.save(config, longer / str(number) / ".hydra" / "config.yaml")


def test_the_longer_budget_check_per_decoder(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": {}}, decoders=("fcn32s", "fcn8s"))
    write_longer_run(tmp_path, 0, 0, 0.505 + 0.004, "fcn8s")  # seed 0 ends at 50.5 %
    write_longer_run(tmp_path, 1, 0, 0.505 + 0.030, "fcn32s")
    section = aggregate(tmp_path).read_text().split("## Convergence check")[1].split("##")[0]
    assert ("Longer-budget check (bilinear fcn8s, val mIoU at the end), seed 0: 50.50 % after "
            "100 iterations (the study), 50.90 % after 200 (2x), difference +0.40 points: "
            "PASS, within 1 point") in section
    assert ("Longer-budget check (bilinear fcn32s, val mIoU at the end), seed 0: 50.50 % after "
            "100 iterations (the study), 53.50 % after 200 (2x), difference +3.00 points: "
            "FAIL, more than 1 point") in section
    assert "Convergence check (bilinear fcn32s, val mIoU, mean over seeds), 3 seeds" in section
    runs, _ = load_runs(tmp_path)
    assert {r["max_iters"] for r in runs} == {100}  # the longer runs are not the study's
    outcome, line = longer_budget_check(runs, [], "fcn8s")
    assert outcome is None and "not checked, no longer bilinear fcn8s run" in line


def test_a_curve_still_rising_makes_its_gain_a_lower_bound(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": {100: 0.05}, "pixel_shuffle": {75: 0.05, 100: 0.05}})
    section = aggregate(tmp_path).read_text().split("## Convergence check")[1].split("##")[0]
    assert ("| fcn8s | transposed | 3 | 51.00 | 56.50 | +5.50 | still rising: its gain over "
            "bilinear is a lower bound |") in section
    assert "| fcn8s | pixel_shuffle | 3 | 56.00 | 56.50 | +0.50 |  |" in section
    assert "| fcn8s | bilinear | 3 | 51.00 | 51.50 | +0.50 |  |" in section


def test_a_control_without_a_gain_to_explain_says_so(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": {}, "bilinear_conv": {}})
    report = aggregate(tmp_path).read_text()
    assert ("bilinear_conv matches transposed: the gain may be the extra parameters (though "
            "transposed - bilinear is +0.00 [-0.50, +0.50] points here: no significant gain "
            "to explain) |") in report


def test_curves_and_per_class_table(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": END_ONLY, "pixel_shuffle": {}},
              decoders=("fcn32s", "fcn8s"))
    report = aggregate(tmp_path).read_text()
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    section = report.split("## Where the gain is: transposed - bilinear per class")[1]
    assert ("| class | fcn32s IoU diff [CI] | fcn32s boundary F diff [CI] | fcn8s IoU diff [CI] "
            "| fcn8s boundary F diff [CI] |") in section
    for name in CLASSES:
        assert f"\n| {name} | " in section
    # circle's IoU follows mIoU: +5 points at the end; background's stays; square is absent
    assert "| circle | **+5.0** [+4.5, +5.5] | **+2.5** [+2.3, +2.7] |" in section
    assert "| square | – | – | – | – |" in section
    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["upsampler"] for r in rows} == {"transposed", "pixel_shuffle"}
    assert len(rows) == 2 * 2 * len(CLASSES) * 2  # decoders x upsamplers x classes x metrics


def test_forward_ms_times_a_model() -> None:
    calls = []
    model = torch.nn.Conv2d(3, 2, 3)
    model.register_forward_hook(lambda *_: calls.append(torch.is_inference_mode_enabled()))
    assert forward_ms(model, torch.device("cpu"), size=32) > 0
    assert calls == [True] * 6  # one warm-up and five timed passes, under inference_mode


def test_peak_memory_counts_what_is_alive_at_once() -> None:
    with PeakMemory() as memory:
        first = torch.empty(1000)  # 4,000 bytes
        second = first * 2
        del first
        third = second + 1
        view = second[10:]  # a view and an in-place result: no new storage
        second.add_(1)
    assert (memory.peak, memory.live) == (8000, 8000)
    del second, third, view
    assert memory.live == 0


def test_forward_peak_bytes_counts_the_pass() -> None:
    model = torch.nn.Conv2d(3, 2, 3)
    assert forward_peak_bytes(model, torch.device("cpu"), size=32) == 2 * 30 * 30 * 4


def test_inference_costs_and_their_table(monkeypatch, tmp_path: Path) -> None:
    from functools import partial

    from seg.models import DECODERS, build_encoder, build_model, build_upsampler
    from seg.study.report import cost_section

    model = build_model(build_encoder("simple"), partial(DECODERS.build, "fcn8s"), 4,
                        partial(build_upsampler, "transposed"))
    monkeypatch.setattr(cost, "lowest_seed_checkpoints",
                        lambda runs: {("fcn8s", "transposed"): tmp_path / "last.pt"})
    monkeypatch.setattr(cost, "trained_model", lambda checkpoint: model.eval())
    (row,) = cost.inference_costs([], devices=[torch.device("cpu")], size=64)
    steps = [*model.decoder.fuse, model.decoder.final]
    assert row["upsampler_parameters"] == sum(p.numel() for s in steps
                                              for p in s.parameters()) > 0
    assert row["cpu"] > 0 and row["cpu_peak_bytes"] >= 4 * 64 * 64 * 4  # >= the logits
    table = cost_section([{**row, "cpu_peak_bytes": 3 * 2**20}])
    assert "| decoder | upsampler | upsampler params | ms per 512² image (CPU) | " \
           "peak MiB (CPU) |" in table
    assert any(line.startswith(f"| fcn8s | transposed | {row['upsampler_parameters']:,} | ")
               and line.endswith(" | 3.0 |") for line in table)


def test_gaps_between_two_studies_pair_by_seed(tmp_path: Path) -> None:
    from seg.study.report import gap_change_report

    # transposed 5 points over bilinear in A, 2 in B (each seed's jitter alike in both)
    fabricate(tmp_path / "a", {"transposed": {100: 0.05}})
    fabricate(tmp_path / "b", {"transposed": {100: 0.02}})
    report = gap_change_report(tmp_path / "a", tmp_path / "b")
    row = next(line for line in report.splitlines() if line.startswith("| fcn8s | transposed"))
    assert row == "| fcn8s | transposed | 3 | +5.00 | +2.00 | **+3.00** [+3.00, +3.00] |"
    same = gap_change_report(tmp_path / "a", tmp_path / "a")
    assert "| fcn8s | transposed | 3 | +5.00 | +5.00 | +0.00 [+0.00, +0.00] |" in same
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gap_change_report(tmp_path / "a", tmp_path / "nowhere")


def test_the_majority_class_miou_by_hand() -> None:
    # true rows: class 0 has 80 pixels, class 1 has 20, class 2 none: 0.8 / 2 classes
    assert majority_class_miou([[70, 10, 0], [15, 5, 0], [0, 0, 0]]) == pytest.approx(0.4)


def test_a_baseline_at_the_majority_class_fails_the_learning_check(tmp_path: Path) -> None:
    # a frozen untrained encoder: background (90 % of the pixels of 5 classes) everywhere
    background_only = [[90, 0, 0, 0, 0]] + [[2.5, 0, 0, 0, 0]] * 4
    runs = [{"decoder": "fcn8s", "upsampler": "bilinear", "mIoU": miou,
             "confusion_matrix": background_only} for miou in (0.181, 0.182, 0.183)]
    passed, line = above_majority_check(runs, "fcn8s")
    assert passed is False and line.startswith(
        "Learning check (bilinear fcn8s, val mIoU at the end, mean over seeds), 3 seeds: "
        "18.20 % against 18.00 % for the majority class at every pixel: FAIL")
    for run in runs:
        run["mIoU"] += 0.2
    assert above_majority_check(runs, "fcn8s")[0] is True
    assert above_majority_check([{**r, "confusion_matrix": None} for r in runs],
                                "fcn8s")[0] is None

    fabricate(tmp_path, {"transposed": {}})  # runs without confusion matrices
    assert ("- Learning check (bilinear fcn8s, val mIoU at the end, mean over seeds): not "
            "checked, no bilinear fcn8s run with a confusion matrix.") in \
        aggregate(tmp_path).read_text()


def test_a_decoder_that_learned_nothing_gets_no_verdicts(tmp_path: Path) -> None:
    from seg.study.report import NO_VERDICT, markdown_report

    fabricate(tmp_path, {"transposed": END_ONLY, "bilinear_conv": END_ONLY})
    runs, _ = load_runs(tmp_path)
    learned = markdown_report(runs, [], [], [])
    assert "**ends better**" in learned and NO_VERDICT not in learned
    # the same runs against a majority class as good as the baseline: nothing learned
    for run in runs:
        run["confusion_matrix"] = [[90, 0], [10, 0]]  # majority-class mIoU 0.9 / 2
        if run["upsampler"] == "bilinear":
            run["mIoU"] = 0.452
    report = markdown_report(runs, [], [], [])
    assert f"- fcn8s: {NO_VERDICT} (the learning check above)" in report
    assert "**ends better**" not in report and "learned is better" not in report
    assert report.count(f"| {NO_VERDICT} |") >= 2  # the paired table's rows, the control's


def test_readings_of_an_unconverged_decoder_say_so(tmp_path: Path) -> None:
    from seg.study.report import UNFINISHED

    fabricate(tmp_path / "a", {"transposed": END_ONLY})  # 0.5 points over the last quarter
    converged = aggregate(tmp_path / "a").read_text()
    assert verdict_of(converged, "fcn8s", "transposed") == "ends better"
    assert UNFINISHED not in converged
    fabricate(tmp_path / "b", {"transposed": END_ONLY}, at_three_quarters=0.45)  # 5.5 points
    report = aggregate(tmp_path / "b").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- fcn8s, transposed:"))
    assert verdict_of(report, "fcn8s", "transposed") == "ends better"
    assert line.endswith(f"at iteration 100; {UNFINISHED})")


def test_beside_the_field(tmp_path: Path) -> None:
    from seg.study.field import kendall_tau, published_sign, ranks

    assert ranks({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 3, "b": 1, "c": 2}
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30}) == 1.0
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 30, "b": 20, "c": 10}) == -1.0
    assert kendall_tau({"a": 1}, {"a": 2}) is None
    assert [published_sign(g) for g in (-1.4, 0.34, 0.5, 0.71)] == [-1, 0, 0, 1]
    # ours: transposed +5 points (significant), carafe about 0, fade -5
    fabricate(tmp_path, {"transposed": END_ONLY, "carafe": {}, "fade": {75: -0.05, 100: -0.05},
                         "bilinear_conv": END_ONLY})
    report = aggregate(tmp_path).read_text()
    field = report.split("## Beside the field")[1].split("\n## ")[0]
    assert "### fcn8s" in field and "bilinear_conv" not in field  # not in the table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in field.splitlines()
            if line.startswith("| ") and "---" not in line and "upsampler" not in line}
    assert list(rows) == ["transposed", "carafe", "fade"]
    assert "| **+5.00** [" in rows["transposed"] and "| 1 | -1.40 (deconvolution) | 3 |" in \
        rows["transposed"]
    assert rows["fade"].split(" | ")[2] == "3"  # our rank: last
    # SegFormer-B1 orders them fade > carafe > transposed: every pair reversed
    assert "- against SegFormer-B1: the orders agree at Kendall's tau -1.00 over 3" in field
    assert "the signs differ for transposed (+1 here, -1 there), carafe (+0 here, +1 " in field
    # UPerNet-R50: transposed +0.34 and carafe +0.40 are within its noise, fade +0.74 is not
    assert ("- against UPerNet-R50: the orders agree at Kendall's tau -1.00 over 3 "
            "upsamplers; the signs differ for transposed (+1 here, +0 there), fade (-1 here, "
            "+1 there)") in field


def test_compare_md_says_how_long_the_study_ran(tmp_path: Path) -> None:
    fabricate(tmp_path, {"transposed": {}})
    assert "The study ran" not in aggregate(tmp_path).read_text()  # not seg-compare's sweep
    (tmp_path / "running_time.json").write_text('{"starts": [3600, 1500.5]}')
    assert ("The study ran 1 h 25 min over 2 starts of the command (wall time: "
            "running_time.json).") in aggregate(tmp_path).read_text()
