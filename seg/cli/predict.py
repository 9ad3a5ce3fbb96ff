"""``seg-predict checkpoint=PATH input=FILE_OR_DIR output=DIR``: segment images with a
trained model.

For each image, ``<stem>.png`` (class indices as a palette PNG of the input's size, in the
checkpoint's colours) and ``<stem>_overlay.jpg`` (the colours blended over the image).
The checkpoint carries the classes, colours, normalisation and model config, so no
dataset config is needed. An unreadable image is reported and skipped; the exit status
is then 1. Subfolders are segmented with ``recursive=true`` (their outputs keep the
subfolder); otherwise they, and files that are not images, are skipped with one line
saying so. Outputs never replace an input (not even through a link or a hard link): an
output folder that holds the inputs is refused, and so are earlier results there unless
``overwrite=true``, which replaces only plain files, never links; two inputs with one stem
(``x.jpg``, ``x.png``) write ``x_jpg.png`` and ``x_png.png``. Nothing else is written.

That ``output`` can be made and written, with room on its disk, is checked before the
model loads. Memory is bounded by ``max_image_pixels``, the most pixels the model is given
at once: a larger image is skipped from its header, and batches are cut to fit. An image
whose outputs' names would pass 255 bytes is skipped, and so are the images of a batch
for which memory still runs out; each is one line, and the others are written.

Torch and the model code are imported inside ``predict``: they take seconds to load, which
``seg-predict --help`` has no use for.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.settings import number_in, one_of, positive_int
from seg.text import printable

log = logging.getLogger("seg.predict")


def predict(cfg: DictConfig) -> list[str]:
    """Segment every image of ``cfg.input`` into ``cfg.output``; return the failures."""
    from seg.engine import resolve_device
    from seg.trained.checkpoint import load_trained
    from seg.trained.outputs import check_output_folder, largest_file_bytes
    from seg.trained.prediction import (
        Predictor,
        check_mask_outputs,
        image_files,
        make_folders,
        output_names,
        predict_files,
        refuse_long_names,
    )

    batch_size = positive_int(cfg.batch_size, "batch_size")
    alpha = number_in(cfg.overlay_alpha, "overlay_alpha", 0.0, 1.0)
    max_pixels = positive_int(cfg.max_image_pixels, "max_image_pixels")
    recursive = one_of(cfg.recursive, "recursive", (True, False))
    overwrite = one_of(cfg.overwrite, "overwrite", (True, False))
    output = Path(cfg.output)
    inputs = image_files(cfg.input, recursive, exclude=output)
    names = output_names(inputs)
    refused = refuse_long_names(names)
    files = [path for path in inputs.files if path in names]
    # before the model loads; the first image's outputs at least must fit
    check_output_folder(output, "output", largest_file_bytes(files), "an image's mask and overlay")
    check_mask_outputs(output, files, names.values(), overwrite)
    predictor = Predictor(load_trained(cfg.checkpoint), resolve_device(cfg.device),
                          instantiate(cfg.inference))
    make_folders(output, names.values())
    failed = refused + predict_files(predictor, files, names, output, batch_size, alpha,
                                     max_pixels, replace=overwrite,
                                     # a bar's redraws are noise in a pipe or log file
                                     progress=cfg.progress and sys.stderr.isatty())
    for problem in failed:
        log.warning("skipped %s", printable(problem))
    total = len(inputs.files)
    log.info("%d of %d images segmented into %s", total - len(failed), total, output)
    if inputs.note():
        log.info("%s", inputs.note())  # last, where it is seen
    return failed


@hydra_command("predict")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if predict(cfg):
        sys.exit(1)  # some images could not be read; the others are written


if __name__ == "__main__":
    main()
