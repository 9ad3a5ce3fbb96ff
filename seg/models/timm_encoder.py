"""Any timm backbone as an FCN encoder (``model/encoder=timm``; timm is an optional extra,
``pip install 'seg[timm]'``).

timm's ``features_only`` models return one feature map per stage and describe them in
``feature_info``; the encoder keeps those at strides 4, 8, 16 and 32 (FCN-4s to FCN-32s)
and reads their channels from there. timm is imported when such an encoder is built, so
the other encoders never need it. A checkpoint names the timm model as data: the name
must be one of ``timm.list_models()`` (with one of timm's pretrained tags for it, such as
``resnet18.a1_in1k``, or none), and only timm's own builder for it runs.

``weights=imagenet`` reads timm's pretrained weights from the Hugging Face cache on disk
(or, for the few timm publishes by URL only, the torch hub cache) and nothing else: seg
never asks a hub, so no server (an ``HF_ENDPOINT`` included) decides what a run trains on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from seg.errors import BadValue, MissingPath, UserError
from seg.files import read_run_text
from seg.models.encoders import ENCODERS, Encoder
from seg.settings import optional_package
from seg.text import printable

TAP_STRIDES = (4, 8, 16, 32)


def import_timm():
    """timm, or one line saying how to install it."""
    return optional_package("timm", "model.encoder.name=timm", extra="timm")


def check_model_name(timm, model_name: str) -> None:
    """``model_name`` is one of ``timm.list_models()``, bare or with one of timm's
    pretrained tags for it (``resnet18.a1_in1k``, split at the first dot as timm does)."""
    architecture, _, tag = model_name.partition(".")
    if architecture not in timm.list_models():
        raise BadValue(f"model.encoder.model_name={model_name!r} is not a timm model: pick "
                       "one of timm.list_models() (python -c \"import timm; "
                       "print(timm.list_models('efficientnet*'))\")")
    if tag and model_name not in timm.list_pretrained(architecture):
        raise BadValue(f"model.encoder.model_name={model_name!r}: timm has no weights tagged "
                       f"{tag!r} for {architecture}: pick one of timm.list_pretrained("
                       f"'{architecture}'), or the bare name {architecture}")


def features_model(model_name: str) -> torch.nn.Module:
    """timm's ``features_only`` model ``model_name``, every stage's output, untrained."""
    timm = import_timm()
    check_model_name(timm, model_name)
    try:
        return timm.create_model(model_name, pretrained=False, features_only=True)
    except (RuntimeError, ValueError, AssertionError, TypeError) as error:
        raise BadValue(f"model.encoder.model_name={model_name}: timm cannot give its feature "
                       f"maps ({str(error).splitlines()[0]}): choose a model that supports "
                       "features_only") from None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, read from the environment
    now (huggingface_hub reads it once, when it is imported)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of Hugging Face repo ``repo_id`` in the hub cache's snapshot layout
    (``models--ORG--NAME/snapshots/REVISION/FILE``; the revision ``refs/main`` names
    first), or None. Only the disk is read."""
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    try:
        main = read_run_text(repo / "refs" / "main", "Hugging Face cache ref", 256).strip()
    except UserError:  # none (a file put there by hand), or not one huggingface_hub wrote
        main = ""
    snapshots = sorted((repo / "snapshots").glob(f"*/{filename}"),
                       key=lambda path: path.parent.name != main)
    return snapshots[0] if snapshots else None


def hf_cache_place(repo_id: str, filename: str) -> Path:
    """The cached file, or where to put it when it is not there."""
    return (hf_cached_file(repo_id, filename)
            or hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "main"
            / filename)


def timm_weights_files(model_name: str) -> list[Path]:
    """Where timm's pretrained weights of ``model_name`` may lie, in the order looked at:
    the Hugging Face cache (safetensors first, as timm prefers), the torch hub cache."""
    pretrained = import_timm().get_pretrained_cfg(model_name)
    if pretrained is None or not (pretrained.hf_hub_id or pretrained.url):
        raise BadValue(f"timm publishes no pretrained weights for {model_name}: set "
                       "model.encoder.weights=/path/to/weights, or weights=null")
    if pretrained.custom_load:
        raise BadValue(f"timm reads the weights of {model_name} with code of its own, not "
                       "as a state dict: set model.encoder.weights=/path/to/state_dict.pth, "
                       "or weights=null")
    places = []
    if pretrained.hf_hub_id:
        repo_id = pretrained.hf_hub_id.split("@")[0]
        names = ([pretrained.hf_hub_filename] if pretrained.hf_hub_filename
                 else ["model.safetensors", "pytorch_model.bin"])
        places += [hf_cache_place(repo_id, name) for name in names]
    if pretrained.url:
        places.append(Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained.url).name)
    return places


@ENCODERS.register("timm")
class TimmEncoder(Encoder):
    """The feature maps of timm model ``model_name`` at strides 4, 8, 16 and 32.

    Its ``state_dict`` is ``body.`` and timm's own keys; a weights file in timm's layout
    (the whole classifier, as timm and ``scripts/prepare_weights.py`` write it) loads
    into it with the classifier's head left out (:meth:`own_layout`)."""

    def __init__(self, model_name: str = "tf_efficientnet_lite0") -> None:
        super().__init__()
        self.model_name = model_name
        self.body = features_model(model_name)
        reductions = list(self.body.feature_info.reduction())
        missing = [stride for stride in TAP_STRIDES if stride not in reductions]
        if missing:
            raise BadValue(f"model.encoder.model_name={model_name}: its features are at "
                           f"strides {reductions}, an FCN needs 4, 8, 16 and 32: choose a "
                           "convolutional model (a plain ViT has one stride)")
        # the last stage of each stride: the deepest features at that resolution
        self.taps = [len(reductions) - 1 - reductions[::-1].index(s) for s in TAP_STRIDES]
        channels = self.body.feature_info.channels()
        self.channels = tuple(channels[i] for i in self.taps)
        self.strides = TAP_STRIDES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        return [features[i] for i in self.taps]

    def imagenet_file(self) -> Path:
        """timm's pretrained weights of ``model_name`` (its default tag, or the tag it
        names) from the caches on disk; never downloaded."""
        places = timm_weights_files(self.model_name)
        found = next((place for place in places if place.exists()), None)
        if found is None:
            raise MissingPath(
                f"timm's weights for {self.model_name} are not cached on this machine "
                f"(seg never downloads): put the file {places[0].name} timm publishes for it "
                f"at {printable(places[0])}, or set model.encoder.weights=/path/to/weights "
                "(.pth or .safetensors in timm's layout; scripts/prepare_weights.py "
                "efficientnet-lite0 writes one), or weights=null")
        return found

    def own_layout(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm's layout (the whole classifier, as timm's cache and
        scripts/prepare_weights.py hold it) as this encoder's: its tensors under ``body.``,
        the classifier's head left out; a file of this encoder's own keys stays as it is."""
        own = self.state_dict()
        return {key if key in own else f"body.{key}": value for key, value in state.items()
                if key in own or f"body.{key}" in own}
