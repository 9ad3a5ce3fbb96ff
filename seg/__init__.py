"""seg: FCN semantic segmentation, trained with Hydra configs on torch.

seg never downloads anything: pretrained weights come from a file or from a cache filled
by hand (seg.models.encoders). Importing seg turns the model hubs' downloads off for the
whole process before anything of seg imports huggingface_hub or timm, so that no library
underneath can fetch what a run then trains on."""

import os
import sys

# Forced, not defaulted: a user's HF_HUB_OFFLINE=0 (or an HF_ENDPOINT naming some server)
# must not let a run fetch weights. huggingface_hub reads these once, when it is imported;
# transformers and datasets read their own.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
os.environ.update(OFFLINE_ENVIRONMENT)
if "huggingface_hub.constants" in sys.modules:  # imported before seg: it has read its switch
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
