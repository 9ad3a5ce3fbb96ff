"""Datasets, in three parts:

- ``seg.data.readers``: the readers (VOC, VOC + SBD, Cityscapes, ADE20K, a folder), one
  module each, and their catalogue, from which a config's splits are built;
- ``seg.data.synthetic``: the generators of the embedded "shapes" and "scenes" datasets
  (written in VOC's layout, read by the voc reader);
- the loading pipeline beside them: checked decoding (decoding), the dataset class every
  reader builds on (base), the label constants (labels), caching, the augmentation
  pipelines, samplers and loaders, the dataset checks and the colour palette (the config
  resolvers, which read the encoders too, are seg.resolvers).

Import what you need from its module (``from seg.data.readers.voc import
VOCSegmentation``): most import torch, OpenCV or albumentations, which ``import
seg.resolvers`` (every command, its --help too) need not wait for. Importing changes
no process-wide setting: decoding applies OpenCV's and PIL's when it starts (see
seg.data.decoding.configure_decoders)."""
