"""Exporting a trained model to ONNX, its normalisation inside the graph and its class
names, palette and normalisation as the file's metadata, so that the file can be used
without its checkpoint: it takes images as decoded (RGB, 0-255), as seg-predict does, and
its metadata says so (``input``, ``output``: the contract, in words)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from seg.files import write_file
from seg.trained.checkpoint import model_from_checkpoint

# The model needs ONNX Resize with half-pixel coordinates (opset 11); torch's TorchScript
# exporter writes up to opset 20.
OPSETS = (11, 20)
# What a checkpoint says about its model that a user of the ONNX file needs, as JSON.
METADATA_KEYS = ("class_names", "palette", "mean", "std")
# What the graph of a checkpoint (exported_model) takes and gives, for its metadata: its
# first step is seg.models.normalise.Normalise, (x - 255 mean) * (1 / (255 std))
GRAPH_INPUT = ("images: float32 (batch, 3, height, width), any height and width: RGB pixel "
               "values 0-255 as decoded, not normalised; the graph normalises them itself, "
               "per channel (images - 255 * mean) / (255 * std), that is (images / 255 - mean) "
               "/ std, with this file's mean and std (RGB, fractions of 255)")
GRAPH_OUTPUT = ("logits: float32 (batch, classes, height, width), the input's height and "
                "width; the argmax over axis 1 is each pixel's index into class_names "
                "(palette: its colour)")


def checkpoint_metadata(state: dict) -> dict[str, str]:
    """The checkpoint's class names, palette and normalisation, each as JSON, and what the
    graph takes (``input``) and gives (``output``)."""
    return {**{key: json.dumps(state[key]) for key in METADATA_KEYS},
            "input": json.dumps(GRAPH_INPUT), "output": json.dumps(GRAPH_OUTPUT)}


def exported_model(state: dict, source: str | Path | None = None) -> nn.Module:
    """A loaded checkpoint's model, its normalisation its first step: what seg-export
    writes, so that the ONNX graph takes images as decoded and normalises them as training
    did (seg.models.normalise.Normalise)."""
    return model_from_checkpoint(state, source)


def weight_bytes(weights: dict[str, torch.Tensor]) -> int:
    """The bytes of a state_dict's tensors: about what the ONNX graph holds."""
    return sum(tensor.numel() * tensor.element_size() for tensor in weights.values())


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int = 18,
                metadata: dict[str, str] | None = None, replace: bool = True) -> Path:
    """Write ``model`` to ``path`` with dynamic batch, height and width. The graph is built
    in memory and written once by :func:`seg.files.write_file` (never through a link, never
    half-written); ``replace=False`` keeps an existing ``path``."""
    import onnx  # an optional dependency: only export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    sample = torch.randn(1, 3, 64, 64)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    graph_bytes = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # torch exports F.pad (the upsamplers pad their input) with the pad widths reversed
        # by a step -1 Slice, then warns three times that its constant folding cannot
        # fold that Slice. The graph is right (tests compare onnxruntime with PyTorch) and
        # the cost is reversing 8 integers at run time: nothing a user can act on.
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="Constant folding - Only steps=1 can be constant folded")
        # group norm (FPN's) checks in Python that a training batch has more than one
        # value per group; traced, that check is a constant the graph never uses
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                module=r"torch\.nn\.functional")
        torch.onnx.export(model, (sample,), graph_bytes, input_names=["images"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"images": dynamic, "logits": dynamic})
    graph = onnx.load_from_string(graph_bytes.getvalue())
    for key, value in (metadata or {}).items():
        graph.metadata_props.add(key=key, value=value)
    return write_file(path, graph.SerializeToString(), replace)
