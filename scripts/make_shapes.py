"""Generate the embedded "shapes" segmentation dataset in PASCAL VOC layout.
``make_scenes.py`` runs the same ``main`` with the "scenes" generator."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from seg.data.synthetic.shapes import generate_shapes

Generate = Callable[..., Path]


def _parse_args(argv: Sequence[str] | None, name: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"Generate the embedded {name!r} dataset "
                                                 "in PASCAL VOC layout.")
    parser.add_argument("--root", type=Path, default=Path(f"data/{name}"),
                        help="output folder")
    parser.add_argument("--num-train", type=int, default=800, help="training images")
    parser.add_argument("--num-val", type=int, default=100, help="validation images")
    parser.add_argument("--size", type=int, default=192, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, name: str = "shapes",
         generate: Generate = generate_shapes) -> int:
    """Generate the dataset unless it already exists (use ``--force`` to regenerate)."""
    args = _parse_args(argv, name)
    lists = args.root / "ImageSets" / "Segmentation"
    if not args.force and (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
        print(f"{name} dataset already exists at {args.root} (use --force to regenerate)")
        return 0
    start = time.perf_counter()
    root = generate(
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
