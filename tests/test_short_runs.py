"""Short runs do what a user expects: a folder dataset trains on crops that fit its images,
a short run warms up to its learning rate, and debug=tiny validates on a few batches."""

from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seg.data.transforms import auto_crop_size, sampled_image_sizes
from seg.engine import PolyLR, poly_factor
from seg.engine.distributed import ProcessGroup
from seg.engine.schedule import resolve_warmup
from seg.training import loaders
from tests.layouts import random_image, random_labels, save_palette_png

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU = torch.device("cpu")


def folder_dataset(root: Path, size: tuple[int, int], count: int = 6) -> Path:
    """``count`` images of ``size`` (height, width) in the folder layout, 3 classes."""
    (root / "images").mkdir(parents=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(
        {"classes": [{"name": name} for name in ("background", "crack", "moss")]}))
    for n in range(count):
        random_image(n, size).save(root / "images" / f"tile_{n}.png")
        save_palette_png(random_labels(n, [0, 1, 2], size), root / "masks" / f"tile_{n}.png")
    return root


# -- crops that fit the images --------------------------------------------------------------

def test_the_folder_recipe_fits_its_crop_to_the_images() -> None:
    assert OmegaConf.load(CONFIGS / "dataset" / "folder.yaml").crop_size == "auto"


@pytest.mark.parametrize(("sizes", "crop"), [
    ([(192, 256)], 192),  # the short side
    ([(300, 400), (64, 80), (500, 500)], 64),  # the smallest image's
    ([(100, 120)], 96),  # whole cells of the coarsest stride, 32
    ([(20, 30)], 20),  # smaller than a cell: the image itself
    ([(1024, 2048)], 512),  # at most the crop of the big-image recipes
    ([], 512),
])
def test_auto_crop_size(sizes: list[tuple[int, int]], crop: int) -> None:
    assert auto_crop_size(sizes) == crop


def test_image_sizes_come_from_a_sample_of_headers(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "data", (64, 80), count=5)
    (root / "images" / "broken.png").write_bytes(b"not an image")  # left out, not fatal
    paths = sorted((root / "images").iterdir())
    assert sampled_image_sizes(paths) == [(64, 80)] * 5
    assert sampled_image_sizes(paths[1:], count=2) == [(64, 80)] * 2  # spread over them


def test_a_folder_of_64_px_images_trains_on_crops_of_at_most_64(compose_train,
                                                                tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "data", (64, 64))
    cfg = compose_train("dataset=folder", f"dataset.root={root}", "dataset.crop_size=auto")
    train_loader, _ = loaders(cfg, CPU, ProcessGroup())
    assert cfg.dataset.crop_size <= 64  # written into the config the checkpoints store
    assert max(next(iter(train_loader))["image"].shape[-2:]) <= 64


# -- warmup as long as the run allows ---------------------------------------------------------

def learning_rates(total_iters: int, warmup_iters: int | str, lr: float = 0.01) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = PolyLR(optimizer, total_iters, warmup_iters=warmup_iters)
    rates = []
    for _ in range(total_iters):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_a_50_iteration_run_reaches_its_peak_learning_rate() -> None:
    rates = learning_rates(50, "auto")
    peak = max(rates)
    assert rates.index(peak) == 5 < 50  # warmup: a tenth of the run
    assert peak == pytest.approx(0.01 * poly_factor(5, 50))  # the poly curve itself: > 0.9 lr
    fixed = learning_rates(50, 100)  # the old fixed warmup never ends in 50 iterations
    assert max(fixed) < 0.5 * peak


def test_warmup_auto_and_explicit_numbers() -> None:
    assert resolve_warmup("auto", 50) == 5
    assert resolve_warmup("auto", 3200) == 100  # a full run's warmup is unchanged
    assert resolve_warmup("auto", 2) == 0  # debug=tiny: none
    assert resolve_warmup(30, 50) == 30 and resolve_warmup(0, 50) == 0
    for bad in ("ten", -1, 2.5, True):
        with pytest.raises(ValueError, match="scheduler.warmup_iters must be an integer"):
            resolve_warmup(bad, 50)


def test_the_default_scheduler_warms_up_over_a_tenth_of_a_short_run(compose_train) -> None:
    cfg = compose_train("trainer.max_iters=50")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    assert instantiate(cfg.scheduler)(optimizer=optimizer).warmup_iters == 5
    cfg = compose_train("trainer.max_iters=50", "scheduler.warmup_iters=20")
    assert instantiate(cfg.scheduler)(optimizer=optimizer).warmup_iters == 20


# -- debug=tiny validates on a few batches -----------------------------------------------------

def test_debug_tiny_validates_on_two_batches(compose_train) -> None:
    cfg = compose_train()
    assert cfg.dataset.val_max_batches == 2
    _, val_loader = loaders(compose_train("dataset.val_max_batches=1"), CPU, ProcessGroup())
    assert len(val_loader) == 1 and len(val_loader.dataset) == 2  # of 4 val images
    _, val_loader = loaders(compose_train("dataset.val_max_batches=null"), CPU, ProcessGroup())
    assert len(val_loader.dataset) == 4


def test_val_max_batches_is_checked(compose_train) -> None:
    with pytest.raises(ValueError, match="dataset.val_max_batches must be a positive integer"):
        loaders(compose_train("dataset.val_max_batches=0"), CPU, ProcessGroup())
