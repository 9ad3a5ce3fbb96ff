"""Benchmarks, each a ratio of two pipelines measured side by side in one run.

    python scripts/bench.py loader [--images 160] [--workers auto]
    python scripts/bench.py cache        # a folder of small images: cache false / auto
    python scripts/bench.py trainer      # our training loop / a bare PyTorch loop
    python scripts/bench.py encoders     # training images/s: simple / a timm encoder
    python scripts/bench.py peer [--steps N] [--warmup N]  # our ResNet-50 FCNs / torchvision
    python scripts/bench.py upsample [--json PATH]  # transposed conv by phases; upsamplers
    python scripts/bench.py audit [--precision P]  # one training step's ops: ours / torchvision
    python scripts/bench.py decoders     # U-Net, FPN, DeepLabV3+, SegFormer: ours / SMP's
    python scripts/bench.py precisions   # lite0 models: fp32, bf16, bf16 + depthwise fp32
    python scripts/bench.py peak         # a step's FLOP/s / the measured peak; where it goes
    python scripts/bench.py sharing      # make train's processes: alone, two at once, beside busy
    python scripts/bench.py all          # every benchmark; writes BENCHMARKS.md

`python scripts/bench.py BENCHMARK --help` says what one measures. After each benchmark,
each of its targets (scripts/benchmarks/targets.py, listed below) that holds on this
device type is printed PASS or FAIL with the measured value; the exit status is 1 when
one fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from seg.files import write_text

from . import (
    audit,
    cache,
    decoders,
    encoders,
    loader,
    peak,
    peer,
    precisions,
    sharing,
    trainer,
    upsample,
    upsamplers,
)
from .harness import device_heading, write_section
from .targets import Verdict, check, describe

AddOptions = Callable[[argparse.ArgumentParser], None]


# -- options ---------------------------------------------------------------------------------


def loader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=160, help="images timed per pipeline")
    parser.add_argument("--workers", default="auto", help="DataLoader workers (both sides)")


def peer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=None,
                        help="peer: timed steps per side (default 30 on CUDA, 5 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="peer: warm-up steps per side (default 10 on CUDA, 2 on the CPU)")


def precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto",
                        help="upsample, audit: 32, bf16, 16 or auto (as Trainer resolves it)")


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None,
                        help="upsample: write {device type: {factor: {native, phases ms}}, "
                             "upsamplers: {device type: {name: {factor: {parameters, ms, "
                             "peak_bytes}}}}}")


# -- each command: its benchmark run with the command line's options -------------------------


def measure_loader(args: argparse.Namespace) -> dict:
    workers = args.workers if args.workers == "auto" else int(args.workers)
    return loader.run(args.images, workers)


def measure_peer(args: argparse.Namespace) -> dict:
    return peer.run(args.steps, args.warmup)


def measure_upsample(args: argparse.Namespace,
                     time_transposed: Callable[..., dict] = upsample.run,
                     cost_upsamplers: Callable[..., dict] = upsamplers.run) -> dict:
    """Both upsample benchmarks at ``--precision``; ``--json`` writes their figures."""
    from seg.engine import resolve_device, resolve_precision

    device = resolve_device("auto")
    precision = resolve_precision(args.precision, device)
    transposed = time_transposed(device, {"precision": precision})
    costs = cost_upsamplers(device, {"precision": precision})
    if args.json is not None:
        figures = {**transposed["timings"], "upsamplers": costs["upsamplers"]}
        write_text(args.json, json.dumps(figures, indent=2) + "\n")
    return {"transposed": transposed, "upsamplers": costs}


def report_upsample(result: dict) -> str:
    return "\n\n".join([upsample.report(result["transposed"]),
                        upsamplers.report(result["upsamplers"])])


def measure_audit(args: argparse.Namespace) -> dict:
    from seg.engine import resolve_device, resolve_precision

    device = resolve_device("auto")
    return audit.run(device, resolve_precision(args.precision, device))


class Command(NamedTuple):
    """A benchmark as the command line runs it."""

    measure: Callable[[argparse.Namespace], dict]  # runs it with the command line's options
    report: Callable[[dict], str]
    summary: str  # one line for the list of commands
    about: str  # what it measures: its --help
    options: tuple[AddOptions, ...] = ()


COMMANDS = {  # in the order `all` runs them
    "loader": Command(measure_loader, loader.report,
                      "images/s: seg's VOC loader / torchvision's reference pipeline",
                      loader.__doc__, (loader_options,)),
    "cache": Command(lambda args: cache.run(), cache.report,
                     "a folder of small images: cache false / auto", cache.__doc__),
    "trainer": Command(lambda args: trainer.run(), trainer.report,
                       "our training loop / a bare PyTorch loop", trainer.__doc__),
    "encoders": Command(lambda args: encoders.run(), encoders.report,
                        "training images/s: simple / a timm encoder", encoders.__doc__),
    "peer": Command(measure_peer, peer.report, "our ResNet-50 FCNs / torchvision",
                    peer.__doc__, (peer_options,)),
    "upsample": Command(measure_upsample, report_upsample,
                        "transposed conv by phases; upsamplers",
                        f"{upsample.__doc__}\n\n{upsamplers.__doc__}",
                        (precision_option, json_option)),
    "audit": Command(measure_audit, audit.report, "one training step's ops: ours / torchvision",
                     audit.__doc__, (precision_option,)),
    "decoders": Command(lambda args: decoders.run(), decoders.report,
                        "U-Net, FPN, DeepLabV3+, SegFormer: ours / SMP's", decoders.__doc__),
    "precisions": Command(lambda args: precisions.run(), precisions.report,
                          "lite0 models: fp32, bf16, bf16 + depthwise fp32",
                          precisions.__doc__),
    "peak": Command(lambda args: peak.run(), peak.report,
                    "a training step's FLOP/s / the measured peak; the step by kind",
                    peak.__doc__),
    "sharing": Command(lambda args: sharing.run(), sharing.report,
                       "make train's processes: alone, two at once, beside a busy one",
                       sharing.__doc__),
}


# -- the command line ------------------------------------------------------------------------


def add_command(subparsers, name: str, summary: str, about: str,
                options: Sequence[AddOptions]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=about,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in options:
        add(parser)
    return parser


def parse_args(argv: Sequence[str] | None,
               commands: Mapping[str, Command] = COMMANDS) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                     epilog="targets:\n" + describe(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="benchmark")
    for name, command in commands.items():
        add_command(subparsers, name, command.summary, command.about, command.options)
    every = add_command(subparsers, "all", "every benchmark; writes BENCHMARKS.md",
                        "Every benchmark, one after the other, with the options of each;\n"
                        "writes this machine's section of BENCHMARKS.md.",
                        list(dict.fromkeys(add for c in commands.values() for add in c.options)))
    every.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                       help="where `all` writes its report")
    side = subparsers.add_parser("peer-side")  # one side of `peer`, in its own process
    side.add_argument("side", choices=tuple(peer.PEER_SIDES))
    peer_options(side)
    decoder_side = subparsers.add_parser("decoders-side")  # one side of `decoders`
    decoder_side.add_argument("decoder", choices=tuple(decoders.DECODERS))
    decoder_side.add_argument("side", choices=decoders.SIDES)
    decoder_side.add_argument("--precision", choices=("32", "bf16", "16"), required=True)
    return parser.parse_args(argv)


def run_checked(name: str, command: Command, args: argparse.Namespace,
                device_type: str) -> tuple[str, list[Verdict]]:
    """Run one benchmark: its report, with a PASS or FAIL line per target, and the
    verdicts."""
    result = command.measure(args)
    verdicts = check(name, result, device_type)
    return "\n".join([command.report(result), *(v.line() for v in verdicts)]), verdicts


def main(argv: Sequence[str] | None = None,
         commands: Mapping[str, Command] = COMMANDS) -> int:
    """Run the benchmark named in ``argv`` (or all of them) and check its targets: 1 when
    one fails, else 0."""
    args = parse_args(argv, commands)
    if args.benchmark == "peer-side":
        print(json.dumps(peer.side(args.side, args.steps, args.warmup)))
        return 0
    if args.benchmark == "decoders-side":
        print(json.dumps(decoders.side(args.decoder, args.side, args.precision)))
        return 0
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    names = list(commands) if args.benchmark == "all" else [args.benchmark]
    reports, verdicts = [], []
    for name in names:
        report, checked = run_checked(name, commands[name], args, device_type)
        print(report, flush=True)
        reports.append(report)
        verdicts += checked
    if args.benchmark == "all":
        write_section(args.output, device_heading(), "\n\n".join(reports))
        print(f"wrote {args.output}")
    failed = sum(not verdict.passed for verdict in verdicts)
    if verdicts:
        print(f"targets: {len(verdicts) - failed} passed, {failed} failed")
    return 1 if failed else 0
