"""The study's report, written into the sweep folder: ``compare.md`` (the findings in
words, then their tables), ``compare.csv`` (every run's every evaluation),
``summary.csv`` (means and standard deviations per configuration), ``per_class.csv``
(per-class differences from bilinear) and the figures."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from seg.engine.metrics import METRICS
from seg.errors import MissingPath
from seg.files import write_text
from seg.study.cost import CPU_THREADS, IMAGE_SIZE, REPEATS, inference_costs
from seg.study.field import FIELD, RUN_TO_RUN, SOURCE, kendall_tau, published_sign, ranks
from seg.study.figures import bar_chart, curve_figure, example_figure
from seg.study.progress import running_time_text
from seg.study.runs import load_longer_runs, load_runs, setting_of
from seg.study.stats import (
    FIXED,
    PER_CLASS_METRICS,
    above_majority_check,
    budget_differences,
    class_names_of,
    configuration_order,
    control_differences,
    convergence_check,
    decoders_of,
    gap_changes,
    last_quarter_changes,
    learning_curves,
    longer_budget_check,
    paired_differences,
    per_class,
    per_class_differences,
    speed_verdicts,
    summarize,
    summary_metrics,
)
from seg.text import printable

PER_CLASS_SHOWN = "transposed"  # compare.md's per-class table; per_class.csv has every upsampler
def recipe_of(config: dict) -> str:
    """One line saying what every run of the sweep trained, for the report's reader, from
    a run's plain config (values shown as written, escaped: seg.text.printable)."""
    def value(key: str) -> object:
        return setting_of(config, key, "?")

    widths, weights = setting_of(config, "model.encoder.widths"), value("model.encoder.weights")
    details = f" widths {widths}" if widths is not None else ""
    if weights not in (None, "?", ""):
        details += f" from {weights}"
    optimizer = str(value("optimizer._target_")).rsplit(".", 1)[-1]
    dataset = setting_of(config, "dataset.name") or value("dataset.root")
    return printable(f"encoder {value('model.encoder.name')}{details}, "
                     f"{value('trainer.max_iters')} iterations of batch "
                     f"{value('dataset.batch_size')} at {value('dataset.crop_size')} px, "
                     f"{optimizer} lr {value('optimizer.lr')}, dataset {dataset}")


# -- words and numbers -----------------------------------------------------------------------


def points(value: float, digits: int = 2) -> str:
    """A ratio as signed percentage points."""
    return f"{100 * value:+.{digits}f}"


def significant(row: dict) -> bool:
    """Whether the row's 95 % interval leaves 0 out (False without an interval)."""
    return row["low"] > 0 or row["high"] < 0


def interval_text(row: dict | None, digits: int = 2, bold: bool = False) -> str:
    """``mean [low, high]`` in points; bold (when asked) where the interval leaves 0 out."""
    if row is None or not row["n"]:
        return "–"
    if math.isnan(row["low"]):
        return f"{points(row['mean'], digits)} (1 seed)"
    mean = points(row["mean"], digits)
    if bold and significant(row):
        mean = f"**{mean}**"
    return f"{mean} [{points(row['low'], digits)}, {points(row['high'], digits)}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; each cell escaped, so that no value can end its row or add a
    column (a newline, a ``|``)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(printable(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def markdown(lines: list[str]) -> str:
    """The lines as one text, each escaped (seg.text.printable): a string from a run
    folder that holds a newline or a terminal escape can neither add a line of its own to
    compare.md nor reach the terminal that prints it."""
    return "".join(printable(line) + "\n" for line in lines)


# -- compare.md's sections, in the order they are read ---------------------------------------


def convergence_section(runs: list[dict], longer_runs: list[dict]) -> list[str]:
    """Per decoder, the two convergence rules and the learning check, then every
    configuration's last quarter."""
    lines = ["## Convergence check", "",
             "Two rules per decoder, both must pass: the baseline's val mIoU moves less than 1 "
             "point over the last quarter of the run, and the baseline trained longer (at least "
             "one seed) ends within 1 point of the study's runs of the same seeds. They mean "
             "something only if the baseline learned: the third line checks that it ends over "
             "1 point above predicting the majority class everywhere.", ""]
    for decoder in decoders_of(runs) or ["fcn8s"]:
        _, quarter = convergence_check(runs, decoder)
        _, longer = longer_budget_check(runs, longer_runs, decoder)
        _, learned = above_majority_check(runs, decoder)
        lines += [f"- {quarter}.", f"- {longer}.", f"- {learned}."]
    return lines + [""] + last_quarter_section(last_quarter_changes(runs))


def last_quarter_section(changes: list[dict]) -> list[str]:
    """Every configuration's change over the last quarter; a curve still rising faster
    than the baseline's makes that configuration's gain a lower bound."""
    if not changes:
        return []
    rows = [[c["decoder"], c["upsampler"], str(c["seeds"]), f"{100 * c['at']:.2f}",
             f"{100 * c['end']:.2f}", points(c["change"]),
             "still rising: its gain over bilinear is a lower bound" if c["still_rising"]
             else ""] for c in changes]
    return ["Val mIoU from 3/4 of the run to its end, mean over seeds (%, change in points):",
            "", *table(["decoder", "upsampler", "seeds", "at 3/4", "end", "change", "note"],
                       rows), ""]


NO_VERDICT = "no verdict: its bilinear runs learned nothing beyond the majority class"


def unlearned_decoders(runs: list[dict]) -> set[str]:
    """The decoders whose learning check fails: their differences mean nothing, so the
    report states none of them as a finding."""
    return {decoder for decoder in decoders_of(runs)
            if above_majority_check(runs, decoder)[0] is False}


UNFINISHED = ("of unfinished runs: a convergence rule above fails for this decoder, so this "
              "reads the budget it had, not where training ends")


def unconverged_decoders(runs: list[dict], longer_runs: list[dict]) -> set[str]:
    """The decoders whose baseline fails a convergence rule (last quarter or longer
    budget): their differences are those of unfinished runs, and the report says so."""
    return {decoder for decoder in decoders_of(runs)
            if convergence_check(runs, decoder)[0] is False
            or longer_budget_check(runs, longer_runs, decoder)[0] is False}


def verdict_section(verdicts: list[dict], unlearned: set[str] = frozenset(),
                    unconverged: set[str] = frozenset()) -> list[str]:
    """Per learned upsampler and decoder, whether it learns faster or ends better, in words;
    for an ``unlearned`` decoder, only that it learned nothing; for an ``unconverged`` one,
    each reading marked as of unfinished runs."""
    lines = ["## Learned vs bilinear, in words", "",
             f"*Learns faster*: val mIoU significantly above {FIXED}'s (paired by seed, 95 % t "
             "interval above 0) at some budget up to 1/4 of the run; *ends better*: at the "
             "last evaluation. In brackets, the early budget whose interval is farthest from 0, "
             "and the end (percentage points).", ""]
    lines += [f"- {decoder}: {NO_VERDICT} (the learning check above)"
              for decoder in sorted(unlearned)]
    for verdict in (v for v in verdicts if v["decoder"] not in unlearned):
        early, final = verdict["early"], verdict["final"]
        at_start = (f"{interval_text(early)} at iteration {early['iteration']}" if early
                    else "no evaluation up to 1/4 of the run")
        caveat = f"; {UNFINISHED}" if verdict["decoder"] in unconverged else ""
        lines.append(f"- {verdict['decoder']}, {verdict['upsampler']}: **{verdict['words']}** "
                     f"(early: {at_start}; end: {interval_text(final)} at iteration "
                     f"{final['iteration']}{caveat})")
    if not verdicts and not unlearned:
        lines.append(f"- no learned upsampler ran with the same seed as {FIXED}")
    return lines + [""]


def final_section(rows: list[dict], pairs: list[dict], unlearned: set[str] = frozenset()
                  ) -> list[str]:
    """The per-configuration table at the end of training, then its paired differences
    (with no verdict for an ``unlearned`` decoder)."""
    columns = summary_metrics()
    titles = [title for title, _, _ in columns.values()]
    lines = ["## At the end of training", "", "Mean ± standard deviation over seeds.", ""]
    cells = [[row["decoder"], row["upsampler"], str(row["seeds"])]
             + [f"{scale * row[f'{key}_mean']:{form}} ± {scale * row[f'{key}_std']:{form}}"
                for key, (_, scale, form) in columns.items()] for row in rows]
    lines += table(["decoder", "upsampler", "seeds", *titles], cells)
    lines += ["", f"Paired difference learned - {FIXED} (same seed), in percentage points, "
              "with its 95 % t interval:", ""]
    lines += table(["decoder", "upsampler", "metric", "seeds", "mean", "95 % CI", "verdict"],
                   [[p["decoder"], p["upsampler"], p["metric"], str(p["n"]), points(p["mean"]),
                     f"[{points(p['low'])}, {points(p['high'])}]",
                     NO_VERDICT if p["decoder"] in unlearned and p["n"] >= 2
                     else p["verdict"]]
                    for p in pairs])
    return lines + [""]


def budget_section(differences: list[dict]) -> list[str]:
    """learned - bilinear val mIoU at every evaluated iteration, one column per iteration."""
    if not differences:
        return []
    iterations = sorted({row["iteration"] for row in differences})
    cells = {(r["decoder"], r["upsampler"], r["iteration"]): r for r in differences}
    configurations = dict.fromkeys((r["decoder"], r["upsampler"]) for r in differences)
    rows = [[decoder, upsampler]
            + [interval_text(cells.get((decoder, upsampler, i)), digits=1, bold=True)
               for i in iterations] for decoder, upsampler in configurations]
    return ["## At every budget", "",
            f"Paired difference learned - {FIXED} val mIoU (same seed) after that many "
            "iterations, in percentage points, with its 95 % t interval; bold where the "
            "interval leaves 0 out. Curves: curves.png.", "",
            *table(["decoder", "upsampler", *(f"it {i}" for i in iterations)], rows), ""]


def control_reading(row: dict) -> str:
    """One line on what the upsampler - control difference says."""
    if row["n"] < 2:
        return "too few paired seeds for an interval"
    significance = 1 if row["low"] > 0 else -1 if row["high"] < 0 else 0
    reading = row["pair"].reading(significance).format(u=row["upsampler"], c=row["control"],
                             d=f"{abs(100 * row['mean']):.2f} points")
    gain = row.get("gain")
    if gain is not None and gain["n"] >= 2 and not gain["low"] > 0:
        # a control explains a gain away only where there is one
        reading += (f" (though {row['upsampler']} - {FIXED} is {interval_text(gain)} points "
                    "here: no significant gain to explain)")
    return reading


def control_section(controls: list[dict], unlearned: set[str] = frozenset()) -> list[str]:
    """Each gain against the control that could explain it away, where the sweep ran both
    (read for no ``unlearned`` decoder)."""
    if not controls:
        return []
    rows = [[c["decoder"], f"{c['upsampler']} - {c['control']}", c["rules_out"],
             f"{c['params']:,} / {c['control_params']:,}" if "params" in c else "–",
             str(c["n"]), interval_text(c),
             NO_VERDICT if c["decoder"] in unlearned and c["n"] >= 2
             else control_reading(c)]
            for c in controls]
    return ["## Does the gain survive its control?", "",
            "Val mIoU at the end, paired by seed, in percentage points with its 95 % t "
            "interval; the upsamplers' learned parameters (the upsampler's / the control's).",
            "", *table(["decoder", "comparison", "control for", "params", "seeds",
                        "difference", "reading"], rows), ""]


def field_section(pairs: list[dict], unlearned: set[str] = frozenset(),
                  unconverged: set[str] = frozenset()) -> list[str]:
    """Per decoder, each upsampler that the field's table (seg.study.field) also has, in
    our order: our val mIoU gain over bilinear and its rank, beside the published gains
    and ranks; then how far the orders agree (Kendall's tau) and where the signs differ.
    No decoder that learned nothing; an unconverged one's readings are marked."""
    published = set().union(*(row.gains for row in FIELD))
    ours = {(p["decoder"], p["upsampler"]): p for p in pairs
            if p["metric"] == "mIoU" and p["n"] and p["upsampler"] in published}
    decoders = sorted({decoder for decoder, _ in ours} - set(unlearned))
    if not decoders:
        return []
    lines = ["## Beside the field", "",
             f"Our val mIoU gain over {FIXED} (paired by seed, 95 % t interval, points) and its "
             f"rank among the upsamplers both ran, beside {SOURCE}: its gains and ranks. A "
             "sign counts where our interval leaves 0 out, and where a published gain is "
             f"beyond ±{RUN_TO_RUN} points (the spread between runs its authors give).", ""]
    for decoder in decoders:
        # our ranking, best first
        names = sorted((u for d, u in ours if d == decoder),
                       key=lambda u: -ours[decoder, u]["mean"])
        gains = {u: ours[decoder, u]["mean"] for u in names}
        our_ranks = ranks(gains)
        their_ranks = [ranks({u: row.gains[u] for u in names}) for row in FIELD]
        header = ["upsampler", "ours", "rank"]
        for row in FIELD:
            header += [f"{row.model} (published)", "rank"]
        cells = []
        for u in names:
            cell = [u, interval_text(ours[decoder, u], bold=True), str(our_ranks[u])]
            for row, theirs in zip(FIELD, their_ranks, strict=True):
                cell += [f"{row.gains[u]:+.2f} ({row.names[u]})", str(theirs[u])]
            cells.append(cell)
        lines += [f"### {decoder}", "", *table(header, cells), ""]
        for row in FIELD:
            lines.append(f"- against {row.model}: "
                         + field_agreement(names, ours, decoder, row.gains))
        if decoder in unconverged:
            lines.append(f"- {UNFINISHED}")
        lines.append("")
    return lines


def field_agreement(names: list[str], ours: dict, decoder: str,
                    published: dict[str, float]) -> str:
    """One line: Kendall's tau between our order and the published one, and the
    upsamplers whose sign differs."""
    gains = {u: ours[decoder, u]["mean"] for u in names}
    tau = kendall_tau(gains, {u: published[u] for u in names})
    order = ("one upsampler, no order to compare" if tau is None
             else f"the orders agree at Kendall's tau {tau:+.2f} over {len(names)} upsamplers")
    differ = [f"{u} ({our_sign(ours[decoder, u]):+d} here, {published_sign(published[u]):+d} "
              "there)" for u in names
              if our_sign(ours[decoder, u]) != published_sign(published[u])]
    signs = ("the signs agree for every one" if not differ
             else "the signs differ for " + ", ".join(differ))
    return f"{order}; {signs}"


def our_sign(row: dict) -> int:
    """+1 or -1 where the row's interval leaves 0 out, else 0."""
    if not significant(row):
        return 0
    return 1 if row["mean"] > 0 else -1


def per_class_section(rows: list[dict]) -> list[str]:
    """Per class, the shown upsampler's IoU and boundary-F differences from bilinear."""
    upsamplers = list(dict.fromkeys(row["upsampler"] for row in rows))
    if not upsamplers:
        return []
    shown = PER_CLASS_SHOWN if PER_CLASS_SHOWN in upsamplers else upsamplers[0]
    cells = {(r["decoder"], r["class"], r["metric"]): r for r in rows if r["upsampler"] == shown}
    decoders = sorted({decoder for decoder, _, _ in cells})
    classes = list(dict.fromkeys(name for _, name, _ in cells))
    header = ["class"] + [f"{decoder} {title} diff [CI]" for decoder in decoders
                          for title in ("IoU", "boundary F")]
    body = [[printable(name)]  # a class name from data: escaped, as compare prints it
            + [interval_text(cells.get((decoder, name, metric)), digits=1, bold=True)
               for decoder in decoders for metric in PER_CLASS_METRICS]
            for name in classes]
    return [f"## Where the gain is: {shown} - {FIXED} per class", "",
            "At the end, paired by seed, in percentage points with the 95 % t interval; bold "
            "where it leaves 0 out; seeds where the class is absent from val are left out. "
            "Every learned upsampler: per_class.csv.", "", *table(header, body), ""]


def cost_section(costs: list[dict]) -> list[str]:
    """For each configuration, the parameters its upsamplers add, and the milliseconds
    and peak memory of one 512 x 512 image, per device."""
    lines = ["## Inference cost", "",
             f"One forward pass of a {IMAGE_SIZE} x {IMAGE_SIZE} image, batch 1, fp32, eval "
             f"mode: the median of {REPEATS} after a warm-up, of each configuration's "
             f"lowest-seed model; on the CPU under torch.set_num_threads({CPU_THREADS}), "
             "steady on a shared machine where several threads' timings swing many times over. "
             "Upsampler params: the trainable parameters of the decoder's upsampling steps. "
             "Peak MiB: allocated at the peak of that pass beyond the model and its input; "
             "on CUDA as torch.cuda.max_memory_allocated counts it, on the CPU the storage "
             "of the tensors its operators return (kernels' scratch buffers left out)."]
    if not torch.cuda.is_available():
        lines.append("CUDA: no GPU on this machine.")
    if not costs:
        return lines + ["", "Not measured: no run has a checkpoints/last.pt.", ""]
    devices = [d for d in ("cpu", "cuda") if any(d in row for row in costs)]
    header = (["decoder", "upsampler", "upsampler params"]
              + [f"ms per {IMAGE_SIZE}² image ({d.upper()})" for d in devices]
              + [f"peak MiB ({d.upper()})" for d in devices])
    rows = [[row["decoder"], row["upsampler"], f"{row['upsampler_parameters']:,}"]
            + [f"{row[d]:.1f}" if d in row else "–" for d in devices]
            + [f"{row[d + '_peak_bytes'] / 2**20:.1f}" if d + "_peak_bytes" in row else "–"
               for d in devices]
            for row in costs]
    return lines + ["", *table(header, rows), ""]


def markdown_report(runs: list[dict], failed: list[str], per_class_rows: list[dict],
                    costs: list[dict], longer_runs: list[dict] | None = None,
                    running_time: str | None = None) -> str:
    """The markdown of compare.md: the findings in words first, then their tables;
    ``running_time``: how long the study ran, where known."""
    recipe = recipe_of(runs[0]["config"]) if runs else ""
    lines = ["# Learned vs fixed upsampling", ""]
    if recipe:
        lines += [f"Every run: {recipe}.", ""]
    if running_time:
        lines += [f"The study ran {running_time}.", ""]
    differences = budget_differences(runs)
    unlearned = unlearned_decoders(runs)
    lines += convergence_section(runs, longer_runs or [])
    unconverged = unconverged_decoders(runs, longer_runs or [])
    lines += verdict_section(speed_verdicts(differences), unlearned, unconverged)
    lines += final_section(summarize(runs), paired_differences(runs), unlearned)
    lines += budget_section(differences)
    lines += control_section(control_differences(runs), unlearned)
    lines += field_section(paired_differences(runs), unlearned, unconverged)
    lines += per_class_section(per_class_rows)
    lines += cost_section(costs)
    lines += ["Failed runs: " + (", ".join(failed) if failed else "none")]
    return markdown(lines)


# -- the files -------------------------------------------------------------------------------


def csv_metrics() -> list[str]:
    """compare.csv's scalar columns, per run and evaluation (then iou/<class>,
    boundary_f/<class>): the registered metrics' scalars with a ``csv`` place, in order
    (seg.engine.metrics.METRICS)."""
    return [scalar.key for scalar in METRICS.placed("csv")]


def budget_rows(runs: list[dict]) -> list[dict]:
    """compare.csv: one row per run and evaluation, its scalars then its per-class values."""
    classes, scalars = class_names_of(runs), csv_metrics()
    rows = []
    for run in sorted(runs, key=lambda r: (configuration_order(r["decoder"], r["upsampler"]),
                                           r["seed"])):
        for entry in run["history"]:
            row = {"decoder": run["decoder"], "upsampler": run["upsampler"],
                   "seed": run["seed"], "iteration": entry["iteration"],
                   **{metric: entry.get(metric) for metric in scalars}}
            for prefix, key in PER_CLASS_METRICS.items():
                values = per_class(entry, key)
                row.update({f"{prefix}/{name}": values.get(name) for name in classes})
            rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows of the same keys, every number in full precision (None: an empty cell), each
    text cell and column name escaped (:func:`csv_text`); written as seg.files writes."""
    fields = list(rows[0]) if rows else ["decoder"]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(map(csv_text, fields))
    writer.writerows([csv_text(value) if isinstance(value, str) else value
                      for value in map(row.get, fields)] for row in rows)
    write_text(path, text.getvalue())


def csv_text(text: str) -> str:
    """A text cell (a class name, a label) escaped as compare.md escapes it, and quoted
    with ``'`` where a spreadsheet would read it as a formula (``=``, ``+``, ``-``, ``@``)."""
    text = printable(text)
    return f"'{text}" if text.startswith(("=", "+", "-", "@")) else text


def aggregate(sweep_dir: str | Path) -> Path:
    """Write compare.md, compare.csv, summary.csv, per_class.csv, compare.png, curves.png
    and examples.png into ``sweep_dir``; return the markdown's path."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise MissingPath(f"sweep folder {printable(sweep_dir)} does not exist")
    runs, failed = load_runs(sweep_dir)
    if not runs and not failed:
        raise MissingPath(f"no runs (*/.hydra/config.yaml) in {printable(sweep_dir)}: pass "
                          "the folder of a `seg-train -m` sweep")
    rows = summarize(runs)
    per_class_rows = per_class_differences(runs)
    write_csv(budget_rows(runs), sweep_dir / "compare.csv")
    write_csv(rows, sweep_dir / "summary.csv")
    write_csv(per_class_rows, sweep_dir / "per_class.csv")
    report = write_text(sweep_dir / "compare.md", markdown_report(
        runs, failed, per_class_rows, inference_costs(runs), load_longer_runs(sweep_dir),
        running_time_text(sweep_dir)))
    if rows:
        bar_chart(rows, sweep_dir / "compare.png")
        curve_figure(learning_curves(runs), sweep_dir / "curves.png")
        example_figure(runs, sweep_dir / "examples.png")
    return report


def gap_change_report(sweep_dir: str | Path, other_dir: str | Path) -> str:
    """The markdown table of :func:`seg.study.stats.gap_changes` between two sweep folders
    (``seg-compare --gaps A B``): each upsampler's gap over bilinear in A, in B, and A's
    minus B's, paired by seed."""
    loaded = []
    for folder in (Path(sweep_dir), Path(other_dir)):
        if not folder.is_dir():
            raise MissingPath(f"sweep folder {printable(folder)} does not exist")
        loaded.append(load_runs(folder)[0])
    rows = gap_changes(*loaded)
    if not rows:
        raise MissingPath(f"{printable(sweep_dir)} and {printable(other_dir)} share no "
                          "upsampler and seed with a bilinear run in each: compare two sweeps "
                          "of the same grid")
    lines = [f"Gap over bilinear (val mIoU at the end, points, paired by seed): A = "
             f"{sweep_dir}, B = {other_dir}; A - B with its 95 % t interval.", ""]
    lines += table(["decoder", "upsampler", "seeds", "gap in A", "gap in B", "A - B"],
                   [[row["decoder"], row["upsampler"], str(row["n"]), points(row["gap"]),
                     points(row["other_gap"]), interval_text(row, bold=True)] for row in rows])
    return markdown(lines)
