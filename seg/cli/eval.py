"""``seg-eval checkpoint=PATH``: a checkpoint's metrics table on its dataset's val split.

The checkpoint carries the resolved training config, so no dataset or model
config is needed; ``dataset_root=PATH`` points it at the data elsewhere. The table is
printed, and written with the confusion matrix to ``eval.json`` in ``output_dir``: the one
file the command writes. An earlier ``eval.json`` there is kept unless ``overwrite=true``,
and a link there is never written through; that, and that ``output_dir`` can be made and
written with room for the file, are checked before anything is evaluated. A bad val
image stops the evaluation naming it, unless ``on_error=skip`` leaves it out.

Torch and the data pipeline are imported inside the functions that use them: they take
seconds to load, which ``seg-eval --help`` has no use for.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.cli.errors import one_line
from seg.errors import BadValue, PathExists
from seg.settings import check_dataset_root, one_of

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
    for done, batch in enumerate(batches, 1):
        yield batch
        if done % every == 0 or done == total:
            log.info("evaluated %d/%d batches", done, total)


def check_eval_json(path: Path, overwrite: bool) -> None:
    """An earlier evaluation's ``eval.json`` is kept unless ``overwrite``; even then a link
    or anything but a plain file is never replaced."""
    from seg.files import refuse_unless_replaceable

    if (path.is_symlink() or path.exists()) and not overwrite:
        raise PathExists(f"{path} holds an earlier evaluation: choose another output_dir, "
                         "or overwrite=true to replace it")
    refuse_unless_replaceable(path, replace=True)


def evaluate_checkpoint(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Evaluate ``cfg.checkpoint``; print the table and write ``eval.json`` into
    ``output_dir``, saying where as the last line."""
    from seg.data.base import ON_ERROR
    from seg.data.loader import build_loader
    from seg.data.pixels import mean_colour
    from seg.engine import name_per_class, resolve_device
    from seg.engine.distributed import init_distributed, process_device
    from seg.engine.metrics import format_table
    from seg.files import write_text
    from seg.trained.checkpoint import (
        dataset_from_stored,
        load_trained,
        model_from_checkpoint,
        stored_reader,
    )
    from seg.trained.outputs import check_output_folder, eval_json_bytes

    path = Path(output_dir, "eval.json")
    overwrite = one_of(cfg.overwrite, "overwrite", (True, False))
    on_error = one_of(cfg.on_error, "on_error", ON_ERROR)
    state = load_trained(cfg.checkpoint)
    # before minutes of evaluation, not after them
    check_output_folder(path.parent, "output_dir", eval_json_bytes(len(state["class_names"])),
                        "eval.json")
    check_eval_json(path, overwrite)
    root = cfg.dataset_root if cfg.dataset_root is not None else stored_reader(state)[1]["root"]
    check_dataset_root(root, key="dataset_root")
    device = resolve_device(cfg.device)
    group = init_distributed(device)  # under torchrun each process evaluates a shard
    device = process_device(device, group)
    loader = build_loader(dataset_from_stored(state, cfg.split, root, on_error),
                          cfg.batch_size, train=False, num_workers=cfg.num_workers,
                          rank=group.rank, world_size=group.world_size,
                          image_fill=mean_colour(state["mean"], state["std"]))

    model = model_from_checkpoint(state, cfg.checkpoint)
    batches = with_progress(loader, cfg.progress and group.is_main)
    metrics = evaluate_split(model.to(device), batches, len(state["class_names"]), device,
                             instantiate(cfg.inference))
    if group.is_main:
        log.info("%s (iteration %d) on %s %s, inference %s, scales %s, flip %s:\n%s",
                 cfg.checkpoint, state["iteration"], root, cfg.split, cfg.inference.mode,
                 list(cfg.inference.scales), cfg.inference.flip,
                 format_table(metrics, state["class_names"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(name_per_class(metrics, state["class_names"]), indent=2),
                   replace=overwrite)
        log.info("wrote %s", path)
    return metrics


def evaluate_split(model: object, batches: Iterable, num_classes: int, device: object,
                   infer: object) -> dict:
    """The metrics of ``model`` over ``batches``. A bad val image is one line naming it and
    seg-eval's own fix (the data's messages name seg-train's ``dataset.on_error``); memory
    that runs out is one line too, not a traceback."""
    from seg.data.decoding import SampleError
    from seg.data.labels import IGNORE_INDEX
    from seg.engine import evaluate
    from seg.trained.inference import out_of_memory

    try:
        return evaluate(model, batches, num_classes, device, IGNORE_INDEX, infer=infer)[0]
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
