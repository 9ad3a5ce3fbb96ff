"""The study's statistics: per configuration (decoder x upsampler) the mean and standard
deviation over seeds, and paired differences (runs with the same seed) with their t
intervals: learned - fixed at the end and at every evaluated budget, per class, and
between an upsampler and its control; the learning curves; the convergence check."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from scipy.stats import t as student_t

from seg.engine.metrics import METRICS
from seg.study.controls import CONTROLS

FIXED = "bilinear"
EARLY_SHARE = 0.25  # "learns faster": significantly better at a budget up to this share of the run
CONVERGED_CHANGE = 0.01  # mIoU: 3/4 of the run to its end moving less than 1 point is converged
# mIoU: a baseline run at a longer budget (study.longer_baseline_factor) ending more than
# 1 point from the study's runs of the same seeds says the study stopped too early
LONGER_BUDGET_CHANGE = 0.01
# mIoU: a baseline within this of predicting the majority class everywhere learned nothing
# (a frozen untrained encoder): the other two rules then pass without meaning anything
ABOVE_MAJORITY = 0.01
# mIoU: an upsampler whose last quarter rose this much more than the baseline's was
# still learning when the study stopped: its gain over the baseline is a lower bound
STILL_RISING = 0.002
PER_CLASS_METRICS = {"iou": "per_class_iou", "boundary_f": "per_class_boundary_f"}
# the summary's columns after the evaluation's metrics: the run's own numbers, each
# -> (column title, scale, format)
RUN_NUMBERS = {
    "upsampler_params": ("upsampler params", 1, ".0f"),
    "train_images_per_s": ("train img/s", 1, ".1f"),
    "inference_ms_per_image": ("inference ms/img", 1, ".2f"),
}


def summary_metrics() -> dict[str, tuple[str, int, str]]:
    """The summary's columns, metric -> (column title, scale, format), in order: the
    registered metrics' scalars that place themselves there (seg.engine.metrics.METRICS;
    ratios in percent), then :data:`RUN_NUMBERS`."""
    placed = {scalar.key: (scalar.title, scalar.scale, scalar.form)
              for scalar in METRICS.placed("summary")}
    return {**placed, **RUN_NUMBERS}


def paired_metrics() -> list[str]:
    """The metrics compared between runs of the same seed, in order (registered metrics'
    scalars with a ``paired`` place)."""
    return [scalar.key for scalar in METRICS.placed("paired")]


def t_quantile(degrees_of_freedom: int) -> float:
    """Student's t 0.975 quantile (a two-sided 95 % interval), exact for any degrees of
    freedom: a table capped at 30 would widen the intervals of larger sweeps."""
    return float(student_t.ppf(0.975, degrees_of_freedom))


def upsampler_rank(name: str) -> tuple[bool, str]:
    """The fixed baseline first, then by name: each static twin beside its content-aware
    upsampler (``carafe``, ``carafe_static``), whatever parts a sweep brings."""
    return name != FIXED, name


def in_study_order(upsamplers: set[str]) -> list[str]:
    return sorted(upsamplers, key=upsampler_rank)


def configuration_order(decoder: str, upsampler: str) -> tuple:
    return decoder, upsampler_rank(upsampler)


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (decoder, upsampler)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["decoder"], run["upsampler"]), []).append(run)
    rows = []
    for decoder, upsampler in sorted(groups, key=lambda c: configuration_order(*c)):
        members = groups[decoder, upsampler]
        row = {"decoder": decoder, "upsampler": upsampler, "seeds": len(members)}
        for key in summary_metrics():
            values = [m[key] for m in members if m.get(key) is not None]
            row[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def paired_differences(runs: list[dict], fixed: str = FIXED) -> list[dict]:
    """learned - fixed for each decoder, upsampler and metric, over the seeds both ran."""
    by_key = {(r["decoder"], r["upsampler"], r["seed"]): r for r in runs}
    pairs = []
    configurations = {(r["decoder"], r["upsampler"]) for r in runs}
    for decoder, upsampler in sorted(configurations, key=lambda c: configuration_order(*c)):
        if upsampler == fixed:
            continue
        seeds = sorted(s for d, u, s in by_key if (d, u) == (decoder, upsampler)
                       and (decoder, fixed, s) in by_key)
        for metric in paired_metrics():
            diffs = [by_key[decoder, upsampler, s][metric] - by_key[decoder, fixed, s][metric]
                     for s in seeds]
            pairs.append({"decoder": decoder, "upsampler": upsampler, "metric": metric,
                          **difference_interval(diffs)})
    return pairs


def difference_interval(diffs: Sequence[float]) -> dict:
    """Mean paired difference, its 95 % t interval and a plain-words verdict."""
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else math.nan, "low": math.nan,
                "high": math.nan, "verdict": "too few paired seeds for an interval"}
    mean = statistics.fmean(diffs)
    half_width = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    low, high = mean - half_width, mean + half_width
    if low <= 0 <= high:
        verdict = "no significant difference"
    else:
        verdict = "learned is better" if mean > 0 else "learned is worse"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


# -- every budget ----------------------------------------------------------------------------


def evaluation_at(run: dict, iteration: int) -> dict | None:
    """The run's evaluation at ``iteration``, None when it made none there."""
    return next((entry for entry in run["history"] if entry["iteration"] == iteration), None)


def value_at(run: dict, metric: str, iteration: int) -> float | None:
    entry = evaluation_at(run, iteration)
    return None if entry is None else entry.get(metric)


def paired(runs: list[dict], decoder: str, upsampler: str, baseline: str,
           value: Callable[[dict], float | None]) -> dict:
    """``value(run)`` of ``upsampler`` - of ``baseline`` for ``decoder``, over the seeds
    both ran and have a value for (None: undefined, e.g. a class absent from val)."""
    by_key = {(r["decoder"], r["upsampler"], r["seed"]): r for r in runs}
    diffs = []
    for (run_decoder, run_upsampler, seed), run in sorted(by_key.items()):
        other = by_key.get((decoder, baseline, seed))
        if (run_decoder, run_upsampler) != (decoder, upsampler) or other is None:
            continue
        mine, theirs = value(run), value(other)
        if mine is not None and theirs is not None:
            diffs.append(mine - theirs)
    return difference_interval(diffs)


def iterations_of(runs: list[dict]) -> list[int]:
    return sorted({entry["iteration"] for run in runs for entry in run["history"]})


def learned_configurations(runs: list[dict], baseline: str = FIXED) -> list[tuple[str, str]]:
    """Every (decoder, upsampler) but the baseline's, in study order."""
    configurations = {(r["decoder"], r["upsampler"]) for r in runs if r["upsampler"] != baseline}
    return sorted(configurations, key=lambda c: configuration_order(*c))


def budget_differences(runs: list[dict], baseline: str = FIXED, metric: str = "mIoU"
                       ) -> list[dict]:
    """upsampler - baseline ``metric`` at every evaluated iteration, paired by seed; each
    row with the iteration's share of the run (``share``)."""
    rows = []
    for decoder, upsampler in learned_configurations(runs, baseline):
        members = [r for r in runs if r["decoder"] == decoder
                   and r["upsampler"] in (upsampler, baseline)]
        length = max(r["max_iters"] for r in members) or 1
        for iteration in iterations_of(members):
            interval = paired(members, decoder, upsampler, baseline,
                              lambda run, i=iteration: value_at(run, metric, i))
            if interval["n"]:
                rows.append({"decoder": decoder, "upsampler": upsampler, "iteration": iteration,
                             "share": iteration / length, **interval})
    return rows


def clearance(row: dict) -> float:
    """How far the interval clears 0 (negative: it holds 0); NaN intervals count least."""
    distance = max(row["low"], -row["high"])
    return -math.inf if math.isnan(distance) else distance


def speed_verdict(rows: list[dict]) -> dict:
    """From one configuration's budget rows: whether it learns faster (significantly
    better at a budget up to a quarter of the run) and ends better (at the last one), in
    words, with the early row that clears 0 most and the final row as evidence."""
    early = [r for r in rows if r["share"] <= EARLY_SHARE]
    final = max(rows, key=lambda r: r["iteration"])
    if all(r["n"] < 2 for r in rows):
        words = "too few paired seeds for an interval"
    else:
        words = verdict_words(faster=any(r["low"] > 0 for r in early),
                              slower=any(r["high"] < 0 for r in early),
                              better=final["low"] > 0, worse=final["high"] < 0,
                              evaluated_early=bool(early))
    return {"words": words, "early": max(early, key=clearance) if early else None,
            "final": final}


def verdict_words(faster: bool, slower: bool, better: bool, worse: bool,
                  evaluated_early: bool) -> str:
    """"learns faster", "ends better", "both" or "neither", and what went worse. Ahead at
    one early budget and behind at another is neither faster nor slower, and said so."""
    mixed = faster and slower
    faster, slower = faster and not mixed, slower and not mixed
    gains = {(True, True): "both: learns faster and ends better", (True, False): "learns faster",
             (False, True): "ends better", (False, False): "neither"}[faster, better]
    losses = " and ".join(w for w, hit in (("learns slower", slower), ("ends worse", worse))
                          if hit)
    early = "; early, ahead at one budget and behind at another" if mixed else ""
    if gains != "neither":
        return (f"{gains}, but {losses}" if losses else gains) + early
    if losses:
        return f"neither: {losses}{early}"
    if mixed:
        return f"neither: no significant difference at the end{early}"
    if evaluated_early:
        return "neither: no significant difference early or at the end"
    return "neither: no significant difference at the end (no evaluation up to 1/4 of the run)"


def speed_verdicts(differences: list[dict]) -> list[dict]:
    """:func:`speed_verdict` per (decoder, upsampler) of :func:`budget_differences`' rows."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in differences:
        groups.setdefault((row["decoder"], row["upsampler"]), []).append(row)
    return [{"decoder": decoder, "upsampler": upsampler, **speed_verdict(rows)}
            for (decoder, upsampler), rows in groups.items()]


def learning_curves(runs: list[dict], metric: str = "mIoU") -> dict[tuple[str, str], list[dict]]:
    """(decoder, upsampler) -> per evaluated iteration the mean of ``metric`` over seeds
    with its 95 % t interval (``mean``, ``low``, ``high``, ``n``, ``iteration``)."""
    curves = {}
    for decoder, upsampler in sorted({(r["decoder"], r["upsampler"]) for r in runs},
                                     key=lambda c: configuration_order(*c)):
        members = [r for r in runs if (r["decoder"], r["upsampler"]) == (decoder, upsampler)]
        points = []
        for iteration in iterations_of(members):
            values = [v for run in members
                      if (v := value_at(run, metric, iteration)) is not None]
            if values:
                points.append({"iteration": iteration, **difference_interval(values)})
        curves[decoder, upsampler] = points
    return curves


# -- controls and classes, at the end --------------------------------------------------------


def control_differences(runs: list[dict], metric: str = "mIoU") -> list[dict]:
    """Each upsampler - its control (seg.study.controls) per decoder, at the end, paired by
    seed; only the pairs the sweep ran. ``gain``: the upsampler - the fixed baseline, for
    the controls that could explain it (else None)."""
    present = {(r["decoder"], r["upsampler"]) for r in runs}
    rows = []
    for decoder in sorted({decoder for decoder, _ in present}):
        for pair in CONTROLS:
            upsampler, control = pair.upsampler, pair.control
            if {(decoder, upsampler), (decoder, control)} <= present:
                interval = paired(runs, decoder, upsampler, control, lambda r: r.get(metric))
                # the gain the control is to explain, when the sweep has the baseline
                gain = (paired(runs, decoder, upsampler, FIXED, lambda r: r.get(metric))
                        if pair.explains_gain and (decoder, FIXED) in present else None)
                rows.append({"decoder": decoder, "upsampler": upsampler, "control": control,
                             "rules_out": pair.rules_out, "gain": gain, "pair": pair,
                             **interval, **parameter_counts(runs, decoder, upsampler, control)})
    return rows


def parameter_counts(runs: list[dict], decoder: str, upsampler: str, control: str) -> dict:
    """``params`` and ``control_params``: the upsamplers' learned parameters of each (as
    the runs recorded them); empty when a run of either did not record them."""
    counts = {}
    for key, name in (("params", upsampler), ("control_params", control)):
        recorded = [r.get("upsampler_params") for r in runs
                    if (r["decoder"], r["upsampler"]) == (decoder, name)]
        if not recorded or None in recorded:
            return {}
        counts[key] = int(max(recorded))
    return counts


def per_class(run: dict, key: str) -> dict:
    """The run's final ``{class: value or None}`` under ``key``; empty for runs that
    stored none, or an unnamed list (sweeps older than named classes)."""
    values = run.get(key)
    return values if isinstance(values, dict) else {}


def class_names_of(runs: list[dict]) -> list[str]:
    """Every class named in the runs' per-class metrics, in their order."""
    names: dict[str, None] = {}
    for run in runs:
        for key in PER_CLASS_METRICS.values():
            names.update(dict.fromkeys(per_class(run, key)))
    return list(names)


def per_class_differences(runs: list[dict], baseline: str = FIXED) -> list[dict]:
    """upsampler - baseline per class IoU and boundary F at the end, paired by seed;
    seeds where either run's class is undefined (absent from val) are left out."""
    rows = []
    for decoder, upsampler in learned_configurations(runs, baseline):
        for name in class_names_of(runs):
            for metric, key in PER_CLASS_METRICS.items():
                interval = paired(runs, decoder, upsampler, baseline,
                                  lambda r, k=key, c=name: per_class(r, k).get(c))
                rows.append({"decoder": decoder, "upsampler": upsampler, "class": name,
                             "metric": metric, **interval})
    return rows


# -- convergence -----------------------------------------------------------------------------


def convergence_check(runs: list[dict], decoder: str = "fcn8s", baseline: str = FIXED
                      ) -> tuple[bool | None, str]:
    """Whether the ``baseline`` ``decoder`` runs converged: their val mIoU (mean over
    seeds) changes by less than 1 point from 3/4 of the run to its end. ``(passed,
    one line saying so)``; passed is None when the sweep cannot tell."""
    members = [r for r in runs if (r["decoder"], r["upsampler"]) == (decoder, baseline)]
    title = f"Convergence check ({baseline} {decoder}, val mIoU, mean over seeds)"
    if not members:
        return None, f"{title}: not checked, the sweep has no {baseline} {decoder} runs"
    length = max(r["max_iters"] for r in members)
    three_quarters = max(1, round(0.75 * length))
    # a run of a few iterations rounds 3/4 of it to its end: nothing to compare
    pairs = [pair for r in members if (pair := last_quarter(r)) is not None]
    if not pairs:
        return None, (f"{title}: not checked, no evaluation at 3/4 of the run (iteration "
                      f"{three_quarters}); train with callbacks=study (its learning curve)")
    at = statistics.fmean(at for at, _ in pairs)
    end = statistics.fmean(end for _, end in pairs)
    passed = abs(end - at) < CONVERGED_CHANGE
    outcome = ("PASS, under 1 point" if passed
               else "FAIL, 1 point or more: not converged, the comparison is of unfinished runs")
    return passed, (f"{title}, {len(pairs)} seeds: {100 * at:.2f} % at iteration "
                    f"{three_quarters} (3/4 of the run), {100 * end:.2f} % at {length} (the end), "
                    f"change {100 * (end - at):+.2f} points: {outcome}")


def decoders_of(runs: list[dict]) -> list[str]:
    return sorted({run["decoder"] for run in runs})


def last_quarter(run: dict) -> tuple[float, float] | None:
    """The run's val mIoU at 3/4 of its length and at its end; None without both."""
    length = run["max_iters"]
    three_quarters = max(1, round(0.75 * length))  # as seg.study.curve.budgets rounds it
    at, end = value_at(run, "mIoU", three_quarters), value_at(run, "mIoU", length)
    if at is None or end is None or three_quarters >= length:
        return None
    return at, end


def last_quarter_changes(runs: list[dict], baseline: str = FIXED) -> list[dict]:
    """Per (decoder, upsampler): the mean over seeds of the val mIoU change over the last
    quarter of the run (``change``, with ``at`` and ``end``), and ``still_rising``: it
    rose :data:`STILL_RISING` more than the decoder's baseline did, so its gain over the
    baseline is a lower bound."""
    rows = []
    for decoder, upsampler in sorted({(r["decoder"], r["upsampler"]) for r in runs},
                                     key=lambda c: configuration_order(*c)):
        pairs = [pair for r in runs if (r["decoder"], r["upsampler"]) == (decoder, upsampler)
                 if (pair := last_quarter(r)) is not None]
        if pairs:
            at, end = (statistics.fmean(values) for values in zip(*pairs, strict=True))
            rows.append({"decoder": decoder, "upsampler": upsampler, "seeds": len(pairs),
                         "at": at, "end": end, "change": end - at})
    baseline_change = {r["decoder"]: r["change"] for r in rows if r["upsampler"] == baseline}
    for row in rows:
        reference = baseline_change.get(row["decoder"])
        row["still_rising"] = (row["upsampler"] != baseline and reference is not None
                               and row["change"] - reference > STILL_RISING)
    return rows


def longer_budget_check(runs: list[dict], longer_runs: list[dict], decoder: str,
                        baseline: str = FIXED) -> tuple[bool | None, str]:
    """Whether the ``baseline`` ``decoder`` runs at a longer budget (``longer_runs``) end
    within :data:`LONGER_BUDGET_CHANGE` of the study's runs of the same seeds (mean over
    those seeds); ``(passed, one line saying so)``, passed None when it cannot tell."""
    title = f"Longer-budget check ({baseline} {decoder}, val mIoU at the end)"
    study = {r["seed"]: r for r in runs if (r["decoder"], r["upsampler"]) == (decoder, baseline)}
    longer = [r for r in longer_runs
              if (r["decoder"], r["upsampler"]) == (decoder, baseline) and r["seed"] in study]
    longer = [r for r in longer if r["max_iters"] > study[r["seed"]]["max_iters"]]
    if not longer:
        return None, (f"{title}: not checked, no longer {baseline} {decoder} run with a seed "
                      "of the study (seg-compare runs them into longer_baseline/)")
    seeds = sorted(r["seed"] for r in longer)
    ours = statistics.fmean(study[seed]["mIoU"] for seed in seeds)
    theirs = statistics.fmean(r["mIoU"] for r in longer)
    passed = abs(theirs - ours) <= LONGER_BUDGET_CHANGE
    outcome = ("PASS, within 1 point" if passed else
               "FAIL, more than 1 point: the study stopped before its baseline converged")
    budget = max(r["max_iters"] for r in longer)
    length = study[seeds[0]]["max_iters"]
    return passed, (f"{title}, seed{'s' if len(seeds) > 1 else ''} "
                    f"{', '.join(map(str, seeds))}: {100 * ours:.2f} % after {length} iterations "
                    f"(the study), {100 * theirs:.2f} % after {budget} "
                    f"({budget / length:g}x), difference {100 * (theirs - ours):+.2f} points: "
                    f"{outcome}")


def majority_class_miou(confusion: Sequence[Sequence[float]]) -> float:
    """The val mIoU of predicting the most frequent true class at every pixel, as
    seg.engine.metrics averages it: that class's IoU is its share of the pixels, every
    other class present scores 0, and classes absent from the truth are left out."""
    per_true = [sum(row) for row in confusion]
    present = [count for count in per_true if count > 0]
    if not present:
        return 0.0  # nothing labelled: nothing to predict
    return max(present) / sum(present) / len(present)


def above_majority_check(runs: list[dict], decoder: str, baseline: str = FIXED
                         ) -> tuple[bool | None, str]:
    """Whether the ``baseline`` ``decoder`` runs learned more than the majority class:
    their final val mIoU (mean over seeds) over :data:`ABOVE_MAJORITY` above
    :func:`majority_class_miou` of their own confusion matrices. ``(passed, one line)``,
    passed None when the runs carry no confusion matrix."""
    title = f"Learning check ({baseline} {decoder}, val mIoU at the end, mean over seeds)"
    members = [r for r in runs if (r["decoder"], r["upsampler"]) == (decoder, baseline)
               and r.get("confusion_matrix")]
    if not members:
        return None, f"{title}: not checked, no {baseline} {decoder} run with a confusion matrix"
    ours = statistics.fmean(r["mIoU"] for r in members)
    majority = statistics.fmean(majority_class_miou(r["confusion_matrix"]) for r in members)
    passed = ours - majority > ABOVE_MAJORITY
    outcome = ("PASS, over 1 point above" if passed else
               "FAIL, within 1 point: the runs learned nothing beyond the majority class, "
               "and the other rules pass without meaning")
    return passed, (f"{title}, {len(members)} seeds: {100 * ours:.2f} % against "
                    f"{100 * majority:.2f} % for the majority class at every pixel: {outcome}")


def gap_changes(runs: list[dict], other_runs: list[dict], baseline: str = FIXED,
                metric: str = "mIoU") -> list[dict]:
    """How each upsampler's gap over ``baseline`` differs between two studies run with the
    same seeds (an ImageNet encoder's against a random one's, say): per decoder and
    upsampler, the gap in each (paired by seed) and (gap - other gap) over the seeds both
    ran, with its 95 % t interval."""
    def gaps(of: list[dict]) -> dict[tuple[str, str, int], float]:
        by_key = {(r["decoder"], r["upsampler"], r["seed"]): r for r in of}
        return {(d, u, s): run[metric] - by_key[d, baseline, s][metric]
                for (d, u, s), run in by_key.items()
                if u != baseline and (d, baseline, s) in by_key}

    mine, theirs = gaps(runs), gaps(other_runs)
    rows = []
    for decoder, upsampler in sorted({(d, u) for d, u, _ in mine},
                                     key=lambda c: configuration_order(*c)):
        seeds = sorted(s for d, u, s in mine if (d, u) == (decoder, upsampler)
                       and (d, u, s) in theirs)
        if not seeds:
            continue
        rows.append({"decoder": decoder, "upsampler": upsampler,
                     "gap": statistics.fmean(mine[decoder, upsampler, s] for s in seeds),
                     "other_gap": statistics.fmean(theirs[decoder, upsampler, s]
                                                   for s in seeds),
                     **difference_interval([mine[decoder, upsampler, s]
                                            - theirs[decoder, upsampler, s] for s in seeds])})
    return rows
