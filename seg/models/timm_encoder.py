"""Any timm backbone as an FCN encoder (``model/encoder=timm``; timm is an optional extra,
``pip install 'seg[timm]'``).

timm's ``features_only`` models return one feature map per stage and describe them in
``feature_info``; the encoder keeps those at strides 4, 8, 16 and 32 (FCN-4s to FCN-32s)
and reads their channels from there. timm is imported when such an encoder is built, so
the other encoders never need it. A checkpoint names the timm model as data: the name
must be one of ``timm.list_models()``, and only timm's own builder for it runs.
"""

from __future__ import annotations

import os

import torch

from seg.errors import BadValue, MissingPath
from seg.models.encoders import ENCODERS, Encoder
from seg.settings import optional_package

TAP_STRIDES = (4, 8, 16, 32)


def import_timm():
    """timm, or one line saying how to install it."""
    return optional_package("timm", "model.encoder.name=timm", extra="timm")


def features_model(model_name: str, pretrained: bool = False) -> torch.nn.Module:
    """timm's ``features_only`` model ``model_name``, every stage's output."""
    timm = import_timm()
    if model_name not in timm.list_models():
        raise BadValue(f"model.encoder.model_name={model_name!r} is not a timm model: pick "
                       "one of timm.list_models() (python -c \"import timm; "
                       "print(timm.list_models('efficientnet*'))\")")
    try:
        return timm.create_model(model_name, pretrained=pretrained, features_only=True)
    except (RuntimeError, ValueError, AssertionError, TypeError) as error:
        if pretrained:
            raise
        raise BadValue(f"model.encoder.model_name={model_name}: timm cannot give its feature "
                       f"maps ({str(error).splitlines()[0]}): choose a model that supports "
                       "features_only") from None


@ENCODERS.register("timm", extras={"imagenet": "timm"})
class TimmEncoder(Encoder):
    """The feature maps of timm model ``model_name`` at strides 4, 8, 16 and 32.

    Its ``state_dict`` is ``body.`` and timm's own keys; a weights file in timm's layout
    (the whole classifier, as timm and ``scripts/prepare_weights.py`` write it) loads
    into it with the classifier's head left out."""

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

    def imagenet_state(self) -> dict[str, torch.Tensor]:
        """timm's pretrained weights from its own cache (Hugging Face's), never downloaded."""
        previous = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            pretrained = features_model(self.model_name, pretrained=True)
        except Exception as error:  # noqa: BLE001 - whatever the hub says, the fix is a file
            raise MissingPath(
                f"timm's weights for {self.model_name} are not in its cache "
                f"({type(error).__name__}): set model.encoder.weights=/path/to/weights "
                "(.pth or .safetensors in timm's layout; scripts/prepare_weights.py "
                "efficientnet-lite0 writes one), or weights=null") from None
        finally:
            if previous is None:
                del os.environ["HF_HUB_OFFLINE"]
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        return {f"body.{key}": value for key, value in pretrained.state_dict().items()}

    def load_published_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict in timm's layout: every key of the feature model must be
        there, with its shape; the rest (the classifier's head) is left out."""
        own = self.body.state_dict()
        absent = [key for key in own if key not in state]
        if absent:
            raise BadValue(f"the weights lack {len(absent)} of the {self.model_name} "
                           f"encoder's tensors (first: {absent[0]}): pass a state dict of "
                           f"timm's {self.model_name}")
        wrong = [key for key in own if state[key].shape != own[key].shape]
        if wrong:
            raise BadValue(f"the weights' {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                           f"the {self.model_name} encoder's {tuple(own[wrong[0]].shape)}: "
                           "pass weights of this model")
        self.body.load_state_dict({key: state[key] for key in own})
