"""Training a model from a composed ``train`` config: the loaders, model, optimiser and
TensorBoard writer it names, the run folder's checkpoints and metrics.json. ``seg-train``
(seg/cli/train.py) is the command line around it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import stat
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from seg.data.base import SegmentationDataset
from seg.data.check import check_dataset, read_every_sample
from seg.data.labels import IGNORE_INDEX
from seg.data.loader import build_loader, first_samples, resolve_num_workers
from seg.data.palette import resolve_palette
from seg.data.pixels import IMAGENET_MEAN, IMAGENET_STD, mean_colour
from seg.data.readers import build_split, training_split, validation_split
from seg.data.transforms import auto_crop_size, sampled_image_sizes
from seg.engine import (
    RunInfo,
    RunParts,
    Trainer,
    load_checkpoint,
    name_per_class,
    seed_everything,
)
from seg.engine.checkpoints import free_name, remove_unfinished_saves
from seg.engine.distributed import ProcessGroup, broadcast_from_main, init_distributed
from seg.engine.hooks import REGISTERED_HOOKS, metric_tag
from seg.engine.losses import LOSSES, checked_class_weights, median_frequency_weights
from seg.engine.metrics import format_table
from seg.engine.resume import ResumeCommand, refuse_changed_settings
from seg.engine.tensorboard import NullLogger, TensorBoardLogger
from seg.errors import BadValue, PathExists, UserError
from seg.files import read_json, read_run_text, write_text
from seg.models import SegmentationModel, model_from_config
from seg.run_lock import run_folder_lock
from seg.run_names import configuration
from seg.settings import (
    check_dataset_root,
    integer_in,
    number_in,
    one_of,
    per_channel,
    positive_int,
    positive_number,
)
from seg.text import printable

log = logging.getLogger("seg.train")


def hparams_of(cfg: DictConfig, configuration: dict[str, str]) -> dict[str, object]:
    """The knobs a sweep compares, shown in TensorBoard's HParams tab: each part as the
    run's configuration labels it (seg.run_names), then the recipe's numbers."""
    return {
        **configuration,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optimizer.lr,
        "encoder_lr_mult": cfg.get("encoder_lr_mult", 1.0),
        "dice_weight": cfg.loss.get("dice_weight", 0.0),
        "batch_size": cfg.dataset.batch_size,
        "max_iters": cfg.trainer.max_iters,
        "seed": cfg.seed,
    }


def parameter_groups(model: SegmentationModel, lr: float, encoder_lr_mult: object
                     ) -> list[dict]:
    """The optimiser's parameter groups: one, or with ``encoder_lr_mult`` other than 1,
    the decoder's at ``lr`` (first, so that logs show it) and the encoder's at
    ``encoder_lr_mult`` times it. 0 freezes the encoder (``freeze_encoder``): no
    gradient, and its batch-norm statistics stay those it came with."""
    mult = number_in(encoder_lr_mult, "encoder_lr_mult", 0.0, float("inf"))
    if mult == 1:  # one group, as checkpoints of earlier versions hold
        return [{"params": list(model.parameters())}]
    encoder = list(model.encoder.parameters())
    if mult == 0:
        model.freeze_encoder()
    in_encoder = {id(parameter) for parameter in encoder}
    rest = [parameter for parameter in model.parameters() if id(parameter) not in in_encoder]
    return [{"params": rest}, {"params": encoder, "lr": lr * mult}]


def train(cfg: DictConfig, run_dir: str | Path, choices: dict[str, str] | None = None,
          resume_command: ResumeCommand | None = None) -> dict:
    """Train as ``cfg`` says, writing checkpoints, TensorBoard events and metrics.json
    into ``run_dir``; return the final metrics (as in metrics.json). The main process
    holds the run folder's lock throughout: a second run into it is refused. With
    ``trainer.resume=auto``, a run that already finished there is left as it is.
    ``choices``: Hydra's runtime choices (the option of each config group), which name
    the run's configuration (seg.run_names); without them it is named from ``cfg``.
    ``resume_command``: what a resume's command line changed against the run, for a
    refusal that names the config group or the override (seg.engine.resume)."""
    check_optimizer(cfg.optimizer)
    trainer = instantiate(cfg.trainer)
    check_settings(cfg)
    group = init_distributed(trainer.device)  # a no-op unless torchrun or SLURM started us
    trainer.join(group)
    if trainer.epochs is not None:
        budget_from_epochs(cfg, trainer, group.world_size)
    trainer.apply_process_settings()  # threads before the data is read; fit does it too
    run_dir = Path(broadcast_from_main(str(run_dir)))
    with run_folder_lock(run_dir) if group.is_main else contextlib.nullcontext():
        if group.is_main:  # the lock held: no save of another process is under way
            remove_unfinished_saves(run_dir / "checkpoints")
        finished = broadcast_from_main(finished_metrics(cfg, run_dir, trainer)
                                       if group.is_main else None)
        if finished is not None:
            if group.is_main:
                log.info("%s already finished: trained to iteration %d with this config "
                         "(metrics.json), nothing to do", run_dir, finished["iterations"])
            return finished
        return train_locked(cfg, run_dir, trainer, group, choices, resume_command)


def finished_metrics(cfg: DictConfig, run_dir: Path, trainer: Trainer) -> dict | None:
    """With ``trainer.resume=auto``, the metrics of the run that ``run_dir`` holds when it
    finished what ``cfg`` asks: metrics.json (written last, and whole) at ``max_iters``,
    and a last.pt trained with this very config. A re-run sweep or a requeued job then
    leaves the folder as it is. Any other config resumes (and re-evaluates) instead, so
    that .hydra/config.yaml, which Hydra has just rewritten, never names a recipe that
    did not train the run (seg.training.keep_earlier_recipe keeps the earlier one)."""
    last = run_dir / "checkpoints" / "last.pt"
    if trainer.resume != "auto" or not last.is_file():
        return None
    metrics = readable_metrics(run_dir / "metrics.json")
    if metrics is None or metrics.get("iterations") != trainer.max_iters:
        return None
    stored = load_checkpoint(last, mmap=True)
    earlier = stored.get("config") or {}
    config = OmegaConf.to_container(cfg, resolve=True)
    if config["dataset"].get("crop_size") == "auto":  # the run resolved it from the images
        config["dataset"]["crop_size"] = earlier.get("dataset", {}).get("crop_size")
    unchanged = stored["iteration"] == trainer.max_iters and earlier == config
    return metrics if unchanged else None


def readable_metrics(path: Path) -> dict | None:
    """metrics.json's contents, or None when there is none to trust (missing, or edited
    into something else): the run then resumes and writes it again. Anything but a plain
    file there (a FIFO, which would hang a read, a device, a link, a folder) is one line:
    the run could not write its metrics.json over it at the end."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise PathExists(f"{printable(path)} is not a plain file (a link, a FIFO, a device or "
                             "a folder), so this run could not write its metrics there: "
                             "remove it, then run again")
    try:
        return read_json(path, "metrics.json")
    except UserError:  # missing, unreadable, not JSON, not an object
        return None


def train_locked(cfg: DictConfig, run_dir: Path, trainer: Trainer, group: ProcessGroup,
                 choices: dict[str, str] | None = None,
                 resume_command: ResumeCommand | None = None) -> dict:
    # first: refuses a folder holding another run, a rewind, a setting it would drop
    resume_from = trainer.resume_state(run_dir)
    if resume_from is not None:
        refuse_changed_settings(resume_from, OmegaConf.to_container(cfg, resolve=True),
                                resume_command)
    parts = build_run(cfg, run_dir, trainer, group, resume_from, choices)
    if group.is_main:
        keep_earlier_recipe(run_dir, resume_from, parts.info.config)
    log.info("training %s on %s in %s (precision %s: %s; evaluations in fp32; %d "
             "process(es))", type(parts.model.encoder).__name__, trainer.device, run_dir,
             trainer.precision, trainer.precision_reason, group.world_size)
    try:
        metrics = trainer.fit(parts, run_dir, resume_from)
        metrics["upsampler_params"] = parts.model.upsampler_parameters()
        parts.logger.log_hparams(hparams_of(cfg, parts.info.configuration),
                                 {metric_tag(key): metrics[key]
                                  for key in ("mIoU", "pixel_acc", "boundary_f")})
    finally:
        parts.logger.close()
    class_names = parts.info.class_names
    if group.is_main:
        log.info("final val metrics:\n%s", format_table(metrics, class_names))
    metrics = {**name_per_class(metrics, class_names),
               "configuration": parts.info.configuration}
    if group.is_main:
        write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        log.info("run folder: %s", run_dir)
    return metrics


def build_run(cfg: DictConfig, run_dir: str | Path, trainer: Trainer | None = None,
              group: ProcessGroup | None = None, resume_from: dict | None = None,
              choices: dict[str, str] | None = None) -> RunParts:
    """Everything the run ``cfg`` describes, for ``Trainer.fit``: seeded, the loaders
    (this process's shard), the model, its parameter groups, optimizer and schedule, the
    loss, what the checkpoints carry, the TensorBoard writer in ``run_dir`` (the main
    process's; continuing ``resume_from``) and the callbacks built with it. ``trainer``
    (default: ``cfg.trainer``'s) decides the device; ``group`` the processes; ``choices``
    (Hydra's runtime choices) name the run's configuration."""
    trainer = trainer if trainer is not None else instantiate(cfg.trainer)
    group = group if group is not None else ProcessGroup()
    seed_everything(cfg.seed, trainer.deterministic)  # checked by check_settings
    train_loader, val_loader = loaders(cfg, trainer.device, group)
    data = cfg.dataset
    model = model_of(cfg.model, data.num_classes, data.mean, data.std)
    if one_of(cfg.get("encoder_norm_eval", False), "encoder_norm_eval", (True, False)):
        model.freeze_encoder_norms()
    optimizer = instantiate(cfg.optimizer)(params=parameter_groups(
        model, cfg.optimizer.lr, cfg.get("encoder_lr_mult", 1.0)))
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    info = run_info(cfg, choices)
    logger = open_logger(cfg, Path(run_dir), trainer.resume, resume_from, group.is_main)
    return RunParts(model, optimizer, scheduler, train_loader, val_loader, info,
                    criterion=loss_from_config(cfg), hooks=callbacks(cfg, logger, model),
                    logger=logger)


# numpy's global generator takes seeds of 32 bits
LARGEST_SEED = 2**32 - 1


def check_settings(cfg: DictConfig) -> None:
    """The settings read once the run has started (after the data is read, or only at
    the end of a schedule), checked before anything is: each fault one line naming it."""
    integer_in(cfg.seed, "seed", 0, LARGEST_SEED)
    per_channel(cfg.dataset.mean, "dataset.mean")
    per_channel(cfg.dataset.std, "dataset.std", positive=True)  # divides every pixel
    check_scheduler(cfg.scheduler, cfg.optimizer.lr)
    check_callbacks(cfg.get("callbacks"))


def check_scheduler(scheduler: DictConfig, lr: float) -> None:
    """Build the schedule ``scheduler`` names on a one-parameter optimizer, so that its own
    checks (seg.engine.schedule.PolyLR's) run before the data is read: the real one is
    built later, once the model is (after the loaders, whose order the seed fixes)."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    instantiate(scheduler)(optimizer=probe)


def check_callbacks(nodes: DictConfig | None) -> None:
    """Each callback must be one of the hooks seg ships (configs/callbacks/) or one that
    a module of ``imports=`` registered (seg.engine.hooks.register_hook), built as a
    partial with plain arguments: a config never names other code to run (no
    ``+callbacks.x._target_=builtins.exec``). Checked before anything runs."""
    allowed = hook_targets()
    for name, node in (nodes or {}).items():
        where = f"callbacks.{printable(str(name))}"
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target not in allowed:
            raise BadValue(f"{where}._target_={printable(str(target))!r} is not a hook of "
                           f"seg ({', '.join(sorted(allowed))}): a callback names one of "
                           "configs/callbacks/, or one your module registers with "
                           "seg.engine.hooks.register_hook, imported by imports=[MODULE]; "
                           f"remove {where}")
        if node.get("_partial_") is not True:
            raise BadValue(f"{where}._partial_ must be true: a hook is built with the "
                           "run's logger and model")
        arguments = OmegaConf.to_container(node, resolve=True)
        nested = next((key for key, value in arguments.items()
                       if key != "_target_" and names_code(value)), None)
        if nested is not None:
            raise BadValue(f"{where}.{printable(str(nested))} names code to run (a "
                           "_target_): a hook's arguments are plain values")


def names_code(value: object) -> bool:
    """Whether a plain config value holds a ``_target_`` at any depth."""
    if isinstance(value, dict):
        return "_target_" in value or any(names_code(item) for item in value.values())
    return isinstance(value, list) and any(names_code(item) for item in value)


def budget_from_epochs(cfg: DictConfig, trainer: Trainer, world_size: int) -> None:
    """``trainer.epochs``: ``max_iters`` for that many passes over the training split (in
    batches of ``dataset.batch_size`` per process, rounded up), set in ``cfg`` too, so
    that the schedule (``${trainer.max_iters}``), the checkpoints' config and a resume
    see it; said in the log."""
    data = cfg.dataset
    check_dataset_root(data.root, data.get("setup_command"))
    images = len(build_split(data, "train", None))  # lists the samples, decodes none
    per_iteration = data.batch_size * world_size
    iterations = max(1, math.ceil(trainer.epochs * images / per_iteration))
    trainer.max_iters = cfg.trainer.max_iters = iterations
    log.info("trainer.epochs=%g: %d iterations (%d training images, %d a step)",
             trainer.epochs, iterations, images, per_iteration)


def check_optimizer(optimizer: DictConfig) -> None:
    """The settings every optimizer has, checked before it is built (torch's own errors
    for them are tracebacks)."""
    positive_number(optimizer.get("lr"), "optimizer.lr")
    number_in(optimizer.get("weight_decay", 0.0), "optimizer.weight_decay", 0.0, float("inf"))


def loaders(cfg: DictConfig, device: torch.device, group: ProcessGroup
            ) -> tuple[DataLoader, DataLoader]:
    """The train and val loaders of ``cfg.dataset``, this process's shard of each. Every
    val image is decoded first: a broken one stops the run before it trains, not after."""
    data = cfg.dataset
    train_loader = training_loader(cfg, device, group)
    options = loader_options(cfg, device, group)
    val_set = limit_val_batches(validation_split(data), data.get("val_max_batches"),
                                data.val_batch_size, group.world_size)
    read_every_sample(val_set, options["num_workers"])
    return train_loader, build_loader(val_set, data.val_batch_size, train=False,
                                      image_fill=mean_colour(data.mean, data.std), **options)


def training_loader(cfg: DictConfig, device: torch.device, group: ProcessGroup,
                    batch_size: int | None = None) -> DataLoader:
    """The augmented train split of ``cfg.dataset`` (this process's shard), in batches of
    ``batch_size`` (default ``dataset.batch_size``), its root checked and an ``auto`` crop
    size resolved first: what training and the study's encoder pretraining read."""
    data = cfg.dataset
    check_dataset_root(data.root, data.get("setup_command"))
    resolve_crop_size(data)
    return build_loader(training_split(data), batch_size or data.batch_size, train=True,
                        **loader_options(cfg, device, group))


def loader_options(cfg: DictConfig, device: torch.device, group: ProcessGroup) -> dict:
    """What both loaders of a run share: workers, seed, pinning and this process's shard."""
    data = cfg.dataset
    workers = resolve_num_workers(data.num_workers, device.type, data.crop_size)
    return {"num_workers": workers, "seed": cfg.seed, "pin_memory": device.type == "cuda",
            "rank": group.rank, "world_size": group.world_size}


def resolve_crop_size(data: DictConfig) -> None:
    """``dataset.crop_size: auto`` (the folder dataset's): crops that fit the training
    images (see ``auto_crop_size``), measured on a sample of them. The number replaces
    ``auto`` in the config, so that the transforms, the worker count, the checkpoints'
    config and TensorBoard all see it; .hydra/config.yaml keeps the recipe's ``auto``."""
    if data.crop_size != "auto":
        return
    images = build_split(data, "train", None)  # lists the samples, decodes none
    data.crop_size = auto_crop_size(sampled_image_sizes([s.image for s in images.samples]))
    log.info("dataset.crop_size=auto: %d px crops, from the sizes of the training images",
             data.crop_size)


def limit_val_batches(val_set: SegmentationDataset, max_batches: int | None, batch_size: int,
                      world_size: int) -> SegmentationDataset:
    """The val split's first ``max_batches`` batches per process (``dataset.val_max_batches``;
    None: all of it). debug=tiny sets it: a smoke run's evaluation need not see the whole
    split, which took most of its time."""
    if positive_int(max_batches, "dataset.val_max_batches", allow_none=True) is None:
        return val_set
    narrowed = first_samples(val_set, max_batches * batch_size * world_size)
    if len(narrowed) < len(val_set):
        log.info("validating on the first %d of %d val images (dataset.val_max_batches=%d)",
                 len(narrowed), len(val_set), max_batches)
    return narrowed


def keep_earlier_recipe(run_dir: Path, resume_from: dict | None, config: dict) -> None:
    """Hydra has just written this command's config over the run folder's
    .hydra/config.yaml (and overrides.yaml): a resumed run continues in its own folder.
    When the recipe changed (e.g. a new trainer.max_iters), keep the one that trained the
    run so far, as the checkpoint stored it (resolved), in
    .hydra/config_until_iteration_N.yaml. These files and config.yaml are the folder's
    whole history; a requeued job resuming with the same recipe adds none."""
    if resume_from is None or not (run_dir / ".hydra").is_dir():
        return  # a fresh run, or no Hydra folder that was overwritten
    if not Path(resume_from["path"]).resolve().is_relative_to(run_dir.resolve()):
        return  # starts from another run's checkpoint: this folder's .hydra/ is its own
    earlier = resume_from.get("config")
    if not earlier or earlier == config:
        return
    recipe = OmegaConf.to_yaml(OmegaConf.create(earlier))
    path = run_dir / ".hydra" / f"config_until_iteration_{resume_from['iteration']}.yaml"
    with contextlib.suppress(UserError):  # one there already: kept, unless it is this one
        if read_run_text(path, "an earlier recipe") == recipe:
            return
    path = write_text(free_name(path), recipe, replace=False)
    log.info("resumed with another config; the one that trained the run so far is in %s", path)


def run_info(cfg: DictConfig, choices: dict[str, str] | None = None) -> RunInfo:
    """What the checkpoints carry so that they can be used alone: the classes, colours,
    normalisation, the resolved config and the configuration's labels (seg.run_names)."""
    data = cfg.dataset
    config = OmegaConf.to_container(cfg, resolve=True)
    return RunInfo(class_names=list(data.class_names),
                   palette=resolve_palette(data.palette, data.num_classes),
                   mean=list(data.mean), std=list(data.std), config=config,
                   ignore_index=IGNORE_INDEX, configuration=configuration(config, choices))


def open_logger(cfg: DictConfig, run_dir: Path, resume: bool | str, resume_from: dict | None,
                is_main: bool) -> TensorBoardLogger | NullLogger:
    """The main process's TensorBoard writer (the others write nothing). A resumed run drops
    what was logged after its checkpoint; a restart (``resume=auto``), everything."""
    if not is_main:
        return NullLogger()
    purge_step = 0 if resume == "auto" else None
    if resume_from is not None:
        purge_step = resume_from["iteration"] + 1
    logger = instantiate(cfg.logger)(log_dir=run_dir / "tb", purge_step=purge_step)
    if resume_from is None:
        logger.log_text("config", OmegaConf.to_yaml(cfg, resolve=True))
    return logger


def callbacks(cfg: DictConfig, logger: object, model: SegmentationModel) -> list:
    """The hooks ``cfg.callbacks`` names (configs/callbacks/), each built with the run's
    logger and model: what plugs into training from outside, the study's among them."""
    nodes = cfg.get("callbacks") or {}
    check_callbacks(nodes)
    return [instantiate(node)(logger=logger, model=model) for node in nodes.values()]


@cache
def shipped_hook_targets() -> frozenset[str]:
    """The ``_target_`` of every hook in seg's own configs/callbacks/ (installed with the
    package as seg.configs)."""
    targets = set()
    for path in (files("seg.configs") / "callbacks").iterdir():
        if path.name.endswith(".yaml"):
            nodes = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            targets |= {node["_target_"] for node in nodes.values()
                        if isinstance(node, dict) and "_target_" in node}
    return frozenset(targets)


def hook_targets() -> frozenset[str]:
    """What a callback may name: seg's hooks and those registered by ``imports=``."""
    return shipped_hook_targets() | REGISTERED_HOOKS


def model_of(model_cfg: DictConfig, num_classes: int,
             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
             ) -> SegmentationModel:
    """The model of a composed config's ``model`` node, its input normalised with ``mean``
    and ``std`` (a run's ``dataset.mean``/``std``), through seg.models.model_from_config,
    which reloading a checkpoint builds through too."""
    return model_from_config(OmegaConf.to_container(model_cfg, resolve=True), num_classes,
                             mean=list(mean), std=list(std))


def loss_from_config(cfg: DictConfig) -> torch.nn.Module:
    """The training loss the ``loss`` node names (seg.engine.losses.LOSSES). Its
    ``class_weights`` are read here, where the dataset's classes are known: a list (one
    per class; the catalogue checks lengths against a default's, and this has none) or
    ``auto``, worked out from the training split."""
    node = OmegaConf.to_container(cfg.loss, resolve=True)
    weights = node.get("class_weights") if isinstance(node, dict) else None
    if weights is not None:
        node["class_weights"] = None  # the catalogue checks the key; the value is checked below
    name, options = LOSSES.read(node, "loss")
    if weights is not None:
        if weights == "auto":
            weights = training_class_weights(cfg.dataset)
        options["class_weights"] = checked_class_weights(weights, cfg.dataset.num_classes)
    return LOSSES.build(name, **options)


def training_class_weights(data: DictConfig) -> list[float]:
    """``loss.class_weights: auto``: median-frequency weights (seg.engine.losses) of the
    training split's label pixel counts, counted as ``seg-data check`` counts them."""
    train_set = build_split(data, "train", None, cache=False)  # read once: keep no copy
    counts = check_dataset("train", train_set, resolve_num_workers(data.num_workers)).histogram
    weights = median_frequency_weights(counts[:data.num_classes])
    log.info("loss.class_weights=auto: %s (median-frequency balancing of the training "
             "split's pixel counts)", ", ".join(f"{w:.3g}" for w in weights))
    return weights
