"""Datasets: their readers (VOC, VOC + SBD, Cityscapes, ADE20K, a folder; the embedded
"shapes" and "scenes" generators), each registered in the readers' catalogue
(seg.data.readers) where it is defined; the colour palette, the augmentation pipelines,
the loaders and the dataset checks. Import what you need from its module
(``from seg.data.voc import VOCSegmentation``): most import torch, OpenCV or
albumentations, which ``import seg.data.resolvers`` (every command, its --help too)
need not wait for."""
