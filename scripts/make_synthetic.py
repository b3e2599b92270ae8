"""Write the synthetic shapes dataset (YOLO and COCO formats) used by the demo and the tests.

python scripts/make_synthetic.py datasets/shapes --train 400 --val 100 --size 128
python scripts/make_synthetic.py datasets/shapes-seg --segments     # objects labelled by their outlines
python scripts/make_synthetic.py datasets/on-photos --photos assets/bus.jpg   # on crops of real photos
"""

from __future__ import annotations

import argparse

from detr_toolkit.data.images import read_image
from detr_toolkit.data.synthetic import make_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--train", type=int, default=800, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", action="store_true", help="polygon labels (instance segmentation)")
    parser.add_argument("--photos", nargs="+", default=[], help="photos whose crops are the backgrounds")
    args = parser.parse_args()
    data = make_synthetic(args.root, args.train, args.val, args.size, args.max_objects, args.seed,
                          segments=args.segments, photos=[read_image(photo) for photo in args.photos])  # fmt: skip
    print(f"wrote {args.train} + {args.val} images; YOLO: {data}, COCO: {data.with_name('coco.yaml')}")


if __name__ == "__main__":
    main()
