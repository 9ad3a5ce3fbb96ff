"""``seg-export checkpoint=PATH format=onnx output=FILE``: a trained model as an ONNX
graph with dynamic batch size, height and width.

The graph takes images as decoded (RGB, 0-255) and normalises them itself, as seg-predict
does; the checkpoint's class names, palette and normalisation go into the ONNX file's
metadata (``class_names``, ``palette``, ``mean``, ``std``, and the graph's ``input``, as
JSON), so that it can be used alone.
That file is all the command writes: whole or not at all, and never through a link;
``overwrite=true`` replaces an existing plain file only. Its name, and that its folder can
be made and written with room for the weights, are checked before the export.

Torch and the model code are imported inside ``export``: they take seconds to load, which
``seg-export --help`` has no use for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.errors import BadValue, IsAFolder, PathExists
from seg.settings import is_int, one_of

log = logging.getLogger("seg.export")

FORMATS = ("onnx",)


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.checkpoint`` as ``cfg.format`` to ``cfg.output``; return the path."""
    from seg.files import check_name_fits, refuse_unless_replaceable
    from seg.trained.checkpoint import load_trained
    from seg.trained.onnx import (
        OPSETS,
        checkpoint_metadata,
        export_onnx,
        exported_model,
        weight_bytes,
    )
    from seg.trained.outputs import check_output_folder

    if cfg.format not in FORMATS:
        raise BadValue(f"format={cfg.format}: seg-export writes {', '.join(FORMATS)}")
    if not is_int(cfg.opset) or not OPSETS[0] <= cfg.opset <= OPSETS[1]:
        raise BadValue(f"opset must be an integer from {OPSETS[0]} to {OPSETS[1]}, "
                       f"got {cfg.opset!r}")
    output = Path(cfg.output)
    overwrite = one_of(cfg.overwrite, "overwrite", (True, False))
    state = load_trained(cfg.checkpoint)
    # all before the export: its folder, its name, and what is there already
    check_output_folder(output.parent, "output", weight_bytes(state["model"]), "the model",
                        value=output)
    check_name_fits(output)
    if output.is_dir():
        raise IsAFolder(f"output={output} is a folder: pass a file name such as "
                        f"{output / 'model.onnx'}")
    if (output.is_symlink() or output.exists()) and not overwrite:
        raise PathExists(f"output={output} exists: choose a new file name, or "
                         "overwrite=true to replace it")
    refuse_unless_replaceable(output, replace=True)  # a link, say
    model = exported_model(state, cfg.checkpoint)  # its normalisation in the graph
    try:
        path = export_onnx(model, output, cfg.opset, checkpoint_metadata(state), overwrite)
    except OSError as error:
        raise BadValue(f"cannot write output={output} ({error.strerror or error}): choose "
                       "a folder you can write to") from None
    log.info("exported %s to %s", cfg.checkpoint, path)
    return path


@hydra_command("export")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
