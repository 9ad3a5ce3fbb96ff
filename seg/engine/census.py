"""A census of the ATen ops a piece of code runs: how many of each kind, which copies and
casts, the bytes of the tensors they make, and the host synchronisations, the points
where a GPU's queue would drain because the host waits for a value (``.item()``, a copy
to the CPU, an op whose output shape depends on the data).

It works on any device, the CPU included, because it counts ops, not time: what a
training step would make a GPU wait for shows on a machine without one. The host-sync
tests and ``scripts/bench.py audit`` read it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

KINDS = ("convolution", "matmul", "normalization", "copy", "cast", "elementwise", "reduction",
         "optimizer", "view", "other", "host_sync")
MATMULS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "dot", "addmv", "mv"}
NORMALIZATIONS = ("batch_norm", "layer_norm", "group_norm")
COPIES = {"copy_", "_to_copy", "clone", "_copy_from", "_copy_from_and_resize"}
# ops a host must wait for even when no value is asked for: their output's size
SHAPE_FROM_DATA = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


def tensors(tree: object) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def reads_back(func: torch._ops.OpOverload, args: tuple, kwargs: dict, out: object) -> bool:
    """Whether this op makes the host wait for the device: a value read back, a copy from
    an accelerator to the CPU, or an output whose shape is decided by the data. A
    ``_local_scalar_dense`` on the CPU counts too: it is where a GPU would wait."""
    name = func.__name__.split(".")[0]
    if name == "_local_scalar_dense" or any(tag in func.tags for tag in SHAPE_FROM_DATA):
        return True
    if name in COPIES:
        sources = [t for t in tensors((args, kwargs)) if t.device.type != "cpu"]
        made = tensors(out)
        return bool(sources) and any(t.device.type == "cpu" for t in made)
    return False


def layout(tensor: torch.Tensor) -> str:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) \
            and not tensor.is_contiguous():
        return "NHWC"
    return "contiguous" if tensor.is_contiguous() else "strided"


def copy_detail(func: torch._ops.OpOverload, args: tuple, out: object) -> tuple[str, str]:
    """``(kind, what)`` of a copy: a cast when the dtype changes, else a copy, with the
    source and result dtype, layout and shape."""
    inputs, made = tensors(args), tensors(out)
    if not inputs or not made:
        return "copy", func.__name__
    source, result = inputs[-1] if func.__name__.startswith("copy_") else inputs[0], made[0]
    kind = "cast" if source.dtype != result.dtype else "copy"
    what = (f"{func.__name__.split('.')[0]} {str(source.dtype)[6:]} {layout(source)} -> "
            f"{str(result.dtype)[6:]} {layout(result)} {tuple(result.shape)}")
    return kind, what


def kind_of(func: torch._ops.OpOverload) -> str:
    """The kind an op is counted under (one of :data:`KINDS`, host syncs aside)."""
    name = func.__name__.split(".")[0]
    if "convolution" in name:
        return "convolution"
    if name in MATMULS:
        return "matmul"
    if any(norm in name for norm in NORMALIZATIONS):
        return "normalization"
    if name in COPIES:
        return "copy"
    if name.startswith(("_foreach_", "_fused_")):
        return "optimizer"
    if func.is_view:
        return "view"
    if torch.Tag.pointwise in func.tags:
        return "elementwise"
    if torch.Tag.reduction in func.tags or name.startswith(
            ("sum", "mean", "amax", "amin", "max", "min", "argmax", "norm", "_softmax",
             "_log_softmax", "nll_loss", "var", "std", "prod", "all", "any", "cumsum")):
        return "reduction"
    return "other"


class OpCensus(TorchDispatchMode):
    """Counts every ATen op run under it by kind (:data:`KINDS`); the copies and casts by
    what they convert; the host syncs per ``phase`` (set it between steps: an iteration,
    say); and ``allocated_bytes``, the storage of the tensors the ops made.
    :meth:`within` names the module each copy runs in (its forward), else "backward" or
    "the loop"; ``others`` names the ops counted as "other"."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.copies: Counter[str] = Counter()
        self.syncs: Counter[object] = Counter()
        self.sync_ops: Counter[str] = Counter()
        self.others: Counter[str] = Counter()
        self.phase: object = None
        self.allocated_bytes = 0
        self.modules: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if reads_back(func, args, kwargs, out):
            self.counts["host_sync"] += 1
            self.syncs[self.phase] += 1
            self.sync_ops[name] += 1
            if name == "_local_scalar_dense":  # a read-back and nothing else
                return out
        kind = kind_of(func)
        if kind == "copy":
            kind, what = copy_detail(func, args, out)
            where = self.modules[-1] if self.modules else (
                "backward" if torch._C._current_graph_task_id() != -1 else "the loop")
            self.copies[f"{kind}: {what} in {where}"] += 1
        if kind == "other":
            self.others[name] += 1
        self.counts[kind] += 1
        self.allocated_bytes += self.new_bytes(args, kwargs, out)  # 0 for views, in-place
        return out

    @staticmethod
    def new_bytes(args: tuple, kwargs: dict, out: object) -> int:
        """The bytes of the storages among ``out`` that no input already had."""
        known = {t.untyped_storage().data_ptr() for t in tensors((args, kwargs))}
        fresh = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                 for t in tensors(out) if t.untyped_storage().data_ptr() not in known}
        return sum(fresh.values())

    @contextmanager
    def within(self, model: nn.Module) -> Iterator[OpCensus]:
        """Name the copies made in ``model``'s forward by the innermost module running."""
        def enter(name: str):
            return lambda module, inputs: self.modules.append(name)

        def leave(module: nn.Module, inputs: object, output: object) -> None:
            self.modules.pop()

        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(name or "model")))
            handles.append(module.register_forward_hook(leave))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.modules.clear()
