"""``sharing``: make train's recipe as whole ``seg-train`` processes on this machine, on
data/shapes (generated first where missing, as ``make train`` does), no evaluation: one
alone; two started together; one beside a busy single-threaded process (a Python loop),
each with the default ``trainer.threads=auto`` and, for comparison, with torch's own
default (``trainer.threads=null``: every core, what runs did before). A rate is the
images/s from the log's time stamps over the run's second half (start-up and warm-up
left out). Ratios to the lone run with the same setting: two at once together (target
>= 1: sharing the cores costs nothing in total) and beside the busy process (>= 0.4);
and the lone run over the two at once together (>= 1: alone, no core is left idle). Beside
the lone run, the other way to give one training every core: data parallelism over
processes (``torchrun``: two processes, each half the cores' threads and half the batch,
the gradients averaged every step), whose rate says which of the two a lone run should use."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "data" / "shapes"
BATCH = 8  # shapes' batch_size
PROCESSES = 2  # of the data-parallel run: 4 images each
# iterations per run: fewer for torch's default where it collapses (a few images/s)
ITERATIONS = {("auto", "alone"): 300, ("auto", "two at once"): 300,
              ("auto", "beside busy"): 300, ("null", "alone"): 300,
              ("null", "two at once"): 100, ("null", "beside busy"): 60}
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*iteration (\d+)/\d+: loss",
                      re.MULTILINE)


def rate_from_log(text: str, batch: int = BATCH) -> float:
    """Images/s between the logged iteration nearest the run's middle and its last one,
    from the lines' time stamps."""
    marks = [(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"), int(iteration))
             for stamp, iteration in LOG_LINE.findall(text)]
    if len(marks) < 2:
        raise RuntimeError("the run logged fewer than two iterations:\n" + text[-2000:])
    last_time, last = marks[-1]
    start_time, start = min(marks[:-1], key=lambda mark: abs(mark[1] - last / 2))
    return (last - start) * batch / (last_time - start_time).total_seconds()


def training(folder: Path, name: str, threads: str, iterations: int) -> subprocess.Popen:
    """make train's recipe for ``iterations`` without evaluation, its log to a file."""
    log = (folder / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "seg.cli.train", f"trainer.max_iters={iterations}",
         "trainer.eval_every=1000000", "trainer.log_every=10", f"trainer.threads={threads}",
         f"dataset.root={SHAPES}", f"hydra.run.dir={folder / name}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def data_parallel(folder: Path, cores: int, iterations: int) -> subprocess.Popen:
    """make train's recipe as ``torchrun`` runs it: :data:`PROCESSES` seg-train processes
    sharing the ``cores`` (threads each) and the batch (the same images per step in all)."""
    log = (folder / "data-parallel.log").open("w")
    seg_train = Path(sys.executable).parent / "seg-train"
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={PROCESSES}", "--no-python", str(seg_train),
         f"trainer.max_iters={iterations}", "trainer.eval_every=1000000",
         "trainer.log_every=10", f"trainer.threads={max(1, cores // PROCESSES)}",
         f"dataset.batch_size={BATCH // PROCESSES}",
         f"dataset.root={SHAPES}", f"hydra.run.dir={folder / 'data-parallel'}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def finished_rate(process: subprocess.Popen, folder: Path, name: str) -> float:
    if process.wait() != 0:
        raise RuntimeError(f"seg-train {name} failed: see {folder / name}.log")
    return rate_from_log((folder / f"{name}.log").read_text())


def setting_rates(folder: Path, threads: str) -> dict:
    """Images/s alone, of each of two at once, and beside a busy process."""
    iterations = {case: ITERATIONS[threads, case] for case in
                  ("alone", "two at once", "beside busy")}
    alone = finished_rate(training(folder, f"{threads}-alone", threads, iterations["alone"]),
                          folder, f"{threads}-alone")
    pair = [training(folder, f"{threads}-pair{index}", threads, iterations["two at once"])
            for index in (0, 1)]
    both = [finished_rate(process, folder, f"{threads}-pair{index}")
            for index, process in enumerate(pair)]
    busy = subprocess.Popen([sys.executable, "-P", "-c", "while True: pass"])
    try:
        beside = finished_rate(training(folder, f"{threads}-busy", threads,
                                        iterations["beside busy"]), folder, f"{threads}-busy")
    finally:
        busy.kill()
        busy.wait()
    return {"alone": alone, "two_at_once": both, "beside_busy": beside,
            "two_at_once_ratio": sum(both) / alone, "beside_busy_ratio": beside / alone,
            "alone_vs_two": alone / sum(both)}


def run() -> dict:
    from seg.data.cpus import available_cpus

    if not (SHAPES / "ImageSets" / "Segmentation" / "train.txt").exists():
        subprocess.run([sys.executable, "-P", "scripts/make_shapes.py", "--root", str(SHAPES)],
                       cwd=ROOT, check=True)
    cores = available_cpus()
    with tempfile.TemporaryDirectory() as folder:
        settings = {threads: setting_rates(Path(folder), threads) for threads in ("auto", "null")}
        parallel = (finished_rate(data_parallel(Path(folder), cores, ITERATIONS["auto", "alone"]),
                                  Path(folder), "data-parallel") if cores > 1 else None)
    alone = settings["auto"]["alone"]
    return {**settings["auto"], "settings": settings, "cores": cores,
            "data_parallel": parallel,
            "data_parallel_vs_alone": None if parallel is None else parallel / alone}


def report(result: dict) -> str:
    lines = [f"Sharing: make train's recipe as seg-train processes, images/s over each run's "
             f"second half ({result['cores']} cores)",
             f"  {'trainer.threads':16s} {'alone':>7s} {'two at once':>17s} {'/ alone':>8s} "
             f"{'beside busy':>12s} {'/ alone':>8s}"]
    for threads, rates in result["settings"].items():
        first, second = rates["two_at_once"]
        lines.append(f"  {threads:16s} {rates['alone']:7.1f} {first:8.1f} + {second:6.1f} "
                     f"{rates['two_at_once_ratio']:8.2f} {rates['beside_busy']:12.1f} "
                     f"{rates['beside_busy_ratio']:8.2f}")
    if result["data_parallel"] is not None:
        lines.append(f"  data parallel, alone: {result['data_parallel']:.1f} images/s "
                     f"({PROCESSES} processes, torchrun), "
                     f"{result['data_parallel_vs_alone']:.2f}x of auto's lone run")
    return "\n".join(lines)
