"""Any timm backbone as an FCN encoder (``model/encoder=timm``; timm is an optional extra,
``pip install 'seg[timm]'``).

timm's ``features_only`` models return one feature map per stage and describe them in
``feature_info``; the encoder keeps those at strides 4, 8, 16 and 32 (FCN-4s to FCN-32s),
with ``finest_stride: 2`` a stride-2 tap first too (SMP's U-Net concatenates one), and
reads their channels from there. timm is imported when such an encoder is built, so
the other encoders never need it. A checkpoint names the timm model as data: the name
must be one of ``timm.list_models()`` (with one of timm's pretrained tags for it, such as
``resnet18.a1_in1k``, or none), and only timm's own builder for it runs.

The encoder's pretrained record (:func:`timm_pretrained`) is read from timm's own
``pretrained_cfg`` of the model, without any network: its normalisation, and for
``weights=imagenet`` the Hugging Face cache on disk (or, for the few timm publishes by URL
only, the torch hub cache) and nothing else: seg never asks a hub, so no server (an
``HF_ENDPOINT`` included) decides what a run trains on.
"""

from __future__ import annotations

import torch

from seg.errors import BadValue
from seg.models.encoders import ENCODERS, HF_HUB, Encoder, Pretrained, Tensors
from seg.models.normalise import IMAGENET_MEAN, IMAGENET_STD
from seg.settings import optional_package

TAP_STRIDES = (4, 8, 16, 32)
FINEST_STRIDES = (2, 4)  # finest_stride: 4, or 2 for a stride-2 tap before TAP_STRIDES
DEFAULT_MODEL = "tf_efficientnet_lite0"


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


def timm_layout(encoder: torch.nn.Module, state: Tensors) -> Tensors:
    """timm's layout (the whole classifier, as timm's cache and scripts/prepare_weights.py
    hold it) as :class:`TimmEncoder`'s: its tensors under ``body.``, the classifier's head
    left out; a file of the encoder's own keys stays as it is."""
    own = encoder.state_dict()
    return {key if key in own else f"body.{key}": value for key, value in state.items()
            if key in own or f"body.{key}" in own}


def timm_sources(pretrained: object) -> tuple[str, ...]:
    """Where timm's weights of a ``pretrained_cfg`` may lie, in the order looked at: the
    Hugging Face cache (safetensors first, as timm prefers), the torch hub cache."""
    sources = []
    if pretrained.hf_hub_id:
        repo_id = pretrained.hf_hub_id.split("@")[0]
        names = ([pretrained.hf_hub_filename] if pretrained.hf_hub_filename
                 else ["model.safetensors", "pytorch_model.bin"])
        sources += [f"{HF_HUB}{repo_id}/{name}" for name in names]
    if pretrained.url:
        sources.append(pretrained.url)
    return tuple(sources)


def timm_pretrained(model_name: str = DEFAULT_MODEL, **_options: object) -> Pretrained:
    """The :class:`Pretrained` record of timm model ``model_name`` (bare, or with one of
    timm's tags), from its ``pretrained_cfg`` in timm's own tables (no network): where its
    weights lie and their normalisation (ImageNet's where timm gives none)."""
    pretrained = import_timm().get_pretrained_cfg(model_name)
    title = f"timm's {model_name} weights"
    if pretrained is None:
        return Pretrained(layout=timm_layout, title=title, unavailable=(
            f"timm publishes no pretrained weights for {model_name}"))
    unavailable = ""
    if pretrained.custom_load:
        unavailable = (f"timm reads the weights of {model_name} with code of its own, not as "
                       "a state dict")
    elif not (pretrained.hf_hub_id or pretrained.url):
        unavailable = f"timm publishes no pretrained weights for {model_name}"
    return Pretrained(
        sources=() if unavailable else timm_sources(pretrained),
        mean=tuple(pretrained.mean or IMAGENET_MEAN), std=tuple(pretrained.std or IMAGENET_STD),
        layout=timm_layout, title=title, unavailable=unavailable)


@ENCODERS.register("timm", record=timm_pretrained)
class TimmEncoder(Encoder):
    """The feature maps of timm model ``model_name`` at strides 4, 8, 16 and 32, after one
    at stride 2 where ``finest_stride`` is 2 (the decoders that fuse at stride 4 take the
    last taps, so only the U-Net uses it).

    Its ``state_dict`` is ``body.`` and timm's own keys; a weights file in timm's layout
    (the whole classifier, as timm and ``scripts/prepare_weights.py`` write it) loads
    into it with the classifier's head left out (:func:`timm_layout`)."""

    def __init__(self, model_name: str = DEFAULT_MODEL, finest_stride: int = 4) -> None:
        super().__init__()
        if finest_stride not in FINEST_STRIDES:
            raise BadValue(f"model.encoder.finest_stride={finest_stride!r}: use 4 (taps at "
                           "strides 4 to 32) or 2 (a stride-2 tap first, as SMP's U-Net)")
        strides = (2, *TAP_STRIDES) if finest_stride == 2 else TAP_STRIDES
        self.model_name = model_name
        self.body = features_model(model_name)
        reductions = list(self.body.feature_info.reduction())
        missing = [stride for stride in strides if stride not in reductions]
        if missing:
            raise BadValue(f"model.encoder.model_name={model_name}: its features are at "
                           f"strides {reductions}, an FCN needs "
                           f"{', '.join(map(str, strides[:-1]))} and {strides[-1]}: choose a "
                           "convolutional model (a plain ViT has one stride)")
        # the last stage of each stride: the deepest features at that resolution
        self.taps = [len(reductions) - 1 - reductions[::-1].index(s) for s in strides]
        channels = self.body.feature_info.channels()
        self.channels = tuple(channels[i] for i in self.taps)
        self.strides = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        return [features[i] for i in self.taps]

