"""Where a run computes, and how it is seeded."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from seg.errors import BadValue

# What seg runs on; torch names others (meta, a device without data; xla, hpu, ...) that
# its models, data loaders and checkpoints were never made for.
TRAINING_DEVICES = ("cpu", "cuda")


def resolve_device(device: str = "auto", key: str = "device") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; a device that is not here is an
    error naming ``key``, the setting it came from."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in TRAINING_DEVICES:  # meta holds no data
        raise BadValue(f"{key}={device!r} is not a device seg computes on: use auto, cpu, "
                       "cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadValue(f"{key}={device} but no CUDA GPU is visible here: use {key}=auto "
                       "or cpu")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise BadValue(f"{key}={device} but this machine has {torch.cuda.device_count()} "
                       "GPU(s): use cuda:0 to cuda:N-1, or auto")
    return resolved


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also forbids nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def use_fast_kernels(device: torch.device, deterministic: bool) -> None:
    """On CUDA, unless runs must repeat bit for bit: cuDNN times its algorithms for each
    new input shape and keeps the fastest (training crops have one shape), and fp32
    matrix products use TF32 tensor cores (10-bit mantissa products, fp32 sums), as
    cuDNN's convolutions already do by default."""
    if device.type != "cuda" or deterministic:
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
