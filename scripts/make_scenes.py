"""Generate the embedded "scenes" segmentation dataset in PASCAL VOC layout."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from seg.data.scenes import generate_scenes


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("data/scenes"), help="output folder")
    parser.add_argument("--num-train", type=int, default=800, help="training images")
    parser.add_argument("--num-val", type=int, default=100, help="validation images")
    parser.add_argument("--size", type=int, default=192, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the dataset unless it already exists (use ``--force`` to regenerate)."""
    args = _parse_args(argv)
    lists = args.root / "ImageSets" / "Segmentation"
    if not args.force and (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
        print(f"scenes dataset already exists at {args.root} (use --force to regenerate)")
        return 0
    start = time.perf_counter()
    root = generate_scenes(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.size,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.num_train} train + {args.num_val} val images to {root} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
