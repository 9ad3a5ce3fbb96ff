"""Generate the embedded "scenes" segmentation dataset in PASCAL VOC layout: the same
command as make_shapes.py (the same flags), with the "scenes" generator."""

from make_shapes import main  # this script's folder is on sys.path when it runs

from seg.data.synthetic.scenes import generate_scenes

if __name__ == "__main__":
    raise SystemExit(main(name="scenes", generate=generate_scenes))
