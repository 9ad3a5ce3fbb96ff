"""``seg-eval checkpoint=PATH``: a checkpoint's metrics table on its dataset's val split,
and pictures of where it goes wrong.

The checkpoint carries the resolved training config, so no dataset or model
config is needed; ``dataset_root=PATH`` points it at the data elsewhere. The table is
printed, and written with the confusion matrix to ``eval.json`` in ``output_dir``; beside
it go the confusion matrix as a picture and a CSV, and the ``worst`` val images by
per-image mIoU as panels in ``worst/`` (seg.trained.error_analysis). Earlier outputs there
are kept unless ``overwrite=true``, and a link there is never written through; that, and
that ``output_dir`` can be made and written with room for the files, are checked before
anything is evaluated. A bad val image stops the evaluation naming it, unless
``on_error=skip`` leaves it out.

Torch and the data pipeline are imported inside the functions that use them: they take
seconds to load, which ``seg-eval --help`` has no use for.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.cli.errors import one_line
from seg.clock import elapsed_and_eta
from seg.errors import BadValue, PathExists
from seg.settings import check_dataset_root, is_int, one_of

log = logging.getLogger("seg.eval")

# What the data's messages advise for a bad sample: seg-train's setting, not seg-eval's.
SKIP_ADVICE = "dataset.on_error=skip"


def with_progress(batches: Collection, show: bool) -> Iterable:
    """``batches``, telling how far the evaluation is when ``show``: a bar on a terminal;
    elsewhere (a pipe, a log file), where a bar's redraws are noise, a log line every tenth
    of the batches, as training does with ``trainer.progress=false``."""
    if not show:
        return batches
    if sys.stderr.isatty():
        return tqdm(batches, desc="eval", unit="batch", dynamic_ncols=True)
    return logged_every_tenth(batches, len(batches))


def logged_every_tenth(batches: Iterable, total: int) -> Iterator:
    every = max(1, total // 10)
    started = time.monotonic()
    for done, batch in enumerate(batches, 1):
        yield batch
        if done % every == 0 or done == total:
            log.info("evaluated %d/%d batches, %s", done, total,
                     elapsed_and_eta(time.monotonic() - started, done, total))


def check_eval_json(path: Path, overwrite: bool) -> None:
    """An earlier evaluation's ``eval.json`` is kept unless ``overwrite``; even then a link
    or anything but a plain file is never replaced."""
    from seg.files import refuse_unless_replaceable

    if (path.is_symlink() or path.exists()) and not overwrite:
        raise PathExists(f"{path} holds an earlier evaluation: choose another output_dir, "
                         "or overwrite=true to replace it")
    refuse_unless_replaceable(path, replace=True)


def worst_count(value: object) -> int:
    """``worst``: how many of the worst val images to draw (0: none)."""
    if not is_int(value) or value < 0:
        raise BadValue(f"worst={value!r}: use a whole number of images to draw, 0 for none")
    return value


def evaluate_checkpoint(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Evaluate ``cfg.checkpoint``; print the table, write ``eval.json`` and the pictures
    into ``output_dir``, saying where, ``eval.json`` in the last line."""
    from seg.data.base import ON_ERROR
    from seg.data.loader import build_loader
    from seg.data.pixels import mean_colour
    from seg.engine import resolve_device
    from seg.engine.distributed import init_distributed, process_device
    from seg.engine.metrics import format_table
    from seg.trained.checkpoint import (
        dataset_from_stored,
        load_trained,
        model_from_checkpoint,
        stored_reader,
    )
    from seg.trained.error_analysis import WorstImages

    path = Path(output_dir, "eval.json")
    overwrite = one_of(cfg.overwrite, "overwrite", (True, False))
    on_error = one_of(cfg.on_error, "on_error", ON_ERROR)
    worst = worst_count(cfg.worst)
    state = load_trained(cfg.checkpoint)
    check_outputs(path, len(state["class_names"]), worst, overwrite)
    root = cfg.dataset_root if cfg.dataset_root is not None else stored_reader(state)[1]["root"]
    check_dataset_root(root, key="dataset_root")
    device = resolve_device(cfg.device)
    group = init_distributed(device)  # under torchrun each process evaluates a shard
    device = process_device(device, group)
    dataset = dataset_from_stored(state, cfg.split, root, on_error)
    check_picture_room(path.parent, len(state["class_names"]), worst, dataset)
    loader = build_loader(dataset, cfg.batch_size, train=False, num_workers=cfg.num_workers,
                          rank=group.rank, world_size=group.world_size,
                          image_fill=mean_colour(state["mean"], state["std"]))

    model = model_from_checkpoint(state, cfg.checkpoint)
    batches = with_progress(loader, cfg.progress and group.is_main)
    collector = WorstImages(worst, len(state["class_names"])) if worst else None
    metrics = evaluate_split(model.to(device), batches, len(state["class_names"]), device,
                             instantiate(cfg.inference), collector)
    worst_images = collector.worst() if collector else None  # every process: a collective
    if group.is_main:
        log.info("%s (iteration %d) on %s %s, fp32, inference %s, scales %s, flip %s:\n%s",
                 cfg.checkpoint, state["iteration"], root, cfg.split, cfg.inference.mode,
                 list(cfg.inference.scales), cfg.inference.flip,
                 format_table(metrics, state["class_names"]))
        write_outputs(path, metrics, state, worst_images, dataset, overwrite)
    return metrics


def check_outputs(path: Path, num_classes: int, worst: int, overwrite: bool) -> None:
    """Before minutes of evaluation, not after them: ``eval.json``'s folder can be made and
    written with room for it, and no earlier output there is replaced unless told."""
    from seg.trained.error_analysis import check_picture_paths
    from seg.trained.outputs import check_output_folder, eval_json_bytes

    check_output_folder(path.parent, "output_dir", eval_json_bytes(num_classes), "eval.json")
    check_eval_json(path, overwrite)
    check_picture_paths(path.parent, worst, overwrite)


def check_picture_room(folder: Path, num_classes: int, worst: int, dataset: object) -> None:
    """The disk has room for the pictures too (their size guessed from the first image)."""
    from seg.trained.error_analysis import picture_bytes
    from seg.trained.outputs import check_output_folder

    first = dataset.samples[0].image if worst and dataset.samples else None
    check_output_folder(folder, "output_dir", picture_bytes(num_classes, worst, first),
                        "confusion.png with the worst/ panels")


def write_outputs(path: Path, metrics: dict, state: dict, worst_images: list | None,
                  dataset: object, overwrite: bool) -> None:
    """``eval.json``, then the pictures beside it; the last line says where eval.json went."""
    from seg.engine import name_per_class
    from seg.files import write_text
    from seg.trained.error_analysis import write_pictures

    names = state["class_names"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(name_per_class(metrics, names), indent=2), replace=overwrite)
    log.info(write_pictures(path.parent, metrics["confusion_matrix"], names,
                            state["palette"][:len(names)], worst_images, dataset, overwrite))
    log.info("wrote %s", path)


def evaluate_split(model: object, batches: Iterable, num_classes: int, device: object,
                   infer: object, on_batch: object = None) -> dict:
    """The metrics of ``model`` over ``batches`` (each batch also handed to ``on_batch``,
    when given). A bad val image is one line naming it and seg-eval's own fix (the data's
    messages name seg-train's ``dataset.on_error``); memory that runs out is one line too,
    not a traceback."""
    from seg.data.decoding import SampleError
    from seg.data.labels import IGNORE_INDEX
    from seg.engine import evaluate
    from seg.trained.inference import out_of_memory

    try:
        return evaluate(model, batches, num_classes, device, IGNORE_INDEX, infer=infer,
                        on_batch=on_batch)[0]
    except SampleError as error:
        raise SampleError(with_eval_advice(one_line(str(error)))) from None
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise BadValue(f"out of memory evaluating on {device} ({reason}): lower batch_size, "
                       "or evaluate where there is more memory") from None


def with_eval_advice(message: str) -> str:
    """``message`` of a bad sample, advising seg-eval's ``on_error=skip``."""
    if SKIP_ADVICE in message:
        return message.replace(SKIP_ADVICE, "on_error=skip")
    return f"{message}, or set on_error=skip to evaluate without it"


@hydra_command("eval")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from seg.engine.distributed import shutdown

    try:
        evaluate_checkpoint(cfg, cfg.output_dir)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
