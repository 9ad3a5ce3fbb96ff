"""``seg-export checkpoint=PATH format=onnx output=FILE``: a trained model as an ONNX
graph with dynamic batch size, height and width.

The checkpoint's class names, palette and normalisation go into the ONNX file's metadata
(``class_names``, ``palette``, ``mean``, ``std`` as JSON), so that it can be used alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from seg.checks import is_int
from seg.cli.common import CONFIG_PATH, exit_on_user_error, overrides_checked
from seg.errors import BadValue, IsAFolder, PathExists
from seg.stored import load_trained, model_from_checkpoint

log = logging.getLogger("seg.export")

FORMATS = ("onnx",)
# The model needs ONNX Resize with half-pixel coordinates (opset 11); torch's TorchScript
# exporter writes up to opset 20.
OPSETS = (11, 20)


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int = 18,
                metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` with dynamic batch, height and width."""
    import onnx  # an optional dependency: only export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    sample = torch.randn(1, 3, 64, 64)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(model, (sample,), str(path), input_names=["images"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"images": dynamic, "logits": dynamic})
    graph = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return path


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise BadValue(f"format={cfg.format}: seg-export writes {', '.join(FORMATS)}")
    if not is_int(cfg.opset) or not OPSETS[0] <= cfg.opset <= OPSETS[1]:
        raise BadValue(f"opset must be an integer from {OPSETS[0]} to {OPSETS[1]}, "
                       f"got {cfg.opset!r}")
    output = Path(cfg.output)
    if output.is_dir():
        raise IsAFolder(f"output={output} is a folder: pass a file name such as "
                        f"{output / 'model.onnx'}")
    if output.exists() and not cfg.overwrite:
        raise PathExists(f"output={output} exists: choose a new file name, or "
                         "overwrite=true to replace it")
    state = load_trained(cfg.checkpoint)
    model = model_from_checkpoint(state, cfg.checkpoint)
    metadata = {key: json.dumps(state[key]) for key in ("class_names", "palette", "mean", "std")}
    try:
        path = export_onnx(model, output, cfg.opset, metadata)
    except OSError as error:
        raise BadValue(f"cannot write output={output} ({error.strerror or error}): choose "
                       "a folder you can write to") from None
    log.info("exported %s to %s", cfg.checkpoint, path)
    return path


@overrides_checked("export")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
