"""The Hydra configs, importable as ``seg.configs`` (pyproject maps this folder there), so
that an installed seg finds them through Hydra's ``pkg://seg.configs`` search path."""
