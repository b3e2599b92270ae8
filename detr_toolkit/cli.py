"""The `detect` command.

    detect predict bus.jpg --model rtdetr-l.pt --conf 0.4 --save
    detect predict source=bus.jpg model=rtdetr-l.pt conf=0.4 save=True     # ultralytics-style, same thing
    detect train --model configs/rtdetr-l.yaml --data data.yaml --epochs 72 --batch 8
    detect train --resume runs/train/exp/weights/last.pt
    detect val --model runs/train/exp/weights/best.safetensors --data data.yaml
    detect export --model runs/train/exp/weights/best.safetensors --format onnx --dynamic

Errors in the user's input print one line (`error: ...`) and exit with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence

import yaml

from .errors import DetrToolkitError

EXIT_USAGE = 2
KEY_VALUE = re.compile(r"^[A-Za-z_][\w-]*=")
HALF_HELP = "half precision: float16 on CUDA, bfloat16 on CPUs with native bf16 (float32 elsewhere)"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="Real-time detection transformers (RT-DETR, RF-DETR, LW-DETR): predict, train, validate, export.",
        epilog="Options may also be given ultralytics-style as key=value (e.g. conf=0.4 save=True).",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict",
        help="detect objects in images, videos, directories or globs",
        description="Detect objects and print one line per image; --save writes plotted images to runs/predict*.",
        epilog="Also accepts key=value arguments, e.g. `detect predict source=bus.jpg conf=0.4 save=True`.",
    )
    predict.add_argument("source", nargs="?", help="image, video, directory, glob or URL")
    predict.add_argument(
        "--model", default="rtdetr-l.pt", help="checkpoint (.pt, .safetensors) or config (.yaml); default rtdetr-l.pt"
    )
    predict.add_argument("--conf", type=float, default=0.25, help="confidence threshold, 0..1 (default 0.25)")
    predict.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="model input size, a multiple of the model's stride (default: the model's own)",
    )
    predict.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default 300)")
    predict.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class indices")
    predict.add_argument("--device", default=None, help="cpu, cuda, cuda:N, N or mps (default: CUDA if available)")
    predict.add_argument("--batch", type=int, default=1, help="images per forward pass (default 1)")
    predict.add_argument("--half", action="store_true", help=HALF_HELP)
    predict.add_argument("--save", action="store_true", help="save plotted images/videos")
    predict.add_argument("--save-txt", action="store_true", help="save YOLO-format labels (class cx cy w h)")
    predict.add_argument("--save-conf", action="store_true", help="add confidences to --save-txt labels")
    predict.add_argument("--project", default="runs", help="folder for saved runs (default runs)")
    predict.add_argument("--name", default="predict", help="run name, incremented if taken (default predict)")
    predict.add_argument("--quiet", action="store_true", help="print nothing per image")
    predict.set_defaults(run=_predict)

    from .engine.train_args import TrainArgs

    train = commands.add_parser(
        "train",
        help="train or fine-tune a model on a YOLO or COCO dataset",
        description="Train (or fine-tune: another class count re-initialises only the class heads). Every run "
        "writes runs/train/NAME/{args.yaml, weights/{last,best}.*, results.csv, results.png}.",
        epilog=f"Any training setting as key=value: {', '.join(f.name for f in dataclasses.fields(TrainArgs))}.",
    )
    train.add_argument("--model", default="rtdetr-l.yaml", help="config (.yaml) or checkpoint to start from")
    train.add_argument("--data", help="YOLO data.yaml, COCO data yaml (format: coco) or COCO instances .json")
    train.add_argument("--cfg", help="YAML file of training settings (key=value arguments override it)")
    train.add_argument("--epochs", type=int, help=f"(default {TrainArgs.epochs})")
    train.add_argument("--batch", type=int, help=f"images per step, over all processes (default {TrainArgs.batch})")
    train.add_argument("--imgsz", type=int, help="training and validation size (default: the model's)")
    train.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA if available)")
    train.add_argument("--project", help=f"(default {TrainArgs.project})")
    train.add_argument("--name", help=f"run name, incremented if taken (default {TrainArgs.name})")
    train.add_argument("--resume", nargs="?", const=True, help="continue a killed run (its weights/last.pt)")
    train.set_defaults(run=_train, **{f.name: None for f in dataclasses.fields(TrainArgs) if f.name != "data"})

    val = commands.add_parser("val", help="COCO metrics of a model on a dataset split")
    val.add_argument("--model", required=False, default="rtdetr-l.pt", help="checkpoint or config")
    val.add_argument("--data", help="YOLO data.yaml, COCO data yaml or instances .json")
    val.add_argument("--split", default="val", help="dataset split (default val)")
    val.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    val.add_argument("--imgsz", type=int, default=None, help="input size (default: the model's)")
    val.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if available)")
    val.add_argument("--half", action="store_true", help=HALF_HELP)
    val.set_defaults(run=_val)

    export = commands.add_parser(
        "export",
        help="write the model as ONNX for onnxruntime, TensorRT, OpenVINO",
        description="Export: input `images` (batch, 3, imgsz, imgsz) RGB 0..1 -> `output0` (batch, queries, "
        "4 + classes): cx cy w h in 0..1 and class scores, ultralytics' RT-DETR layout.",
    )
    export.add_argument("--model", default="rtdetr-l.pt", help="checkpoint or config (default rtdetr-l.pt)")
    export.add_argument("--format", default="onnx", help="onnx (default)")
    export.add_argument("--imgsz", type=int, default=None, help="input size, fixed in the graph (default: the model's)")
    export.add_argument("--batch", type=int, default=1, help="batch size traced (default 1)")
    export.add_argument("--dynamic", action="store_true", help="accept any batch size")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    export.add_argument("--file", default=None, help="output file (default: next to the checkpoint)")
    export.set_defaults(run=_export)
    return parser


def _apply_key_values(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
    """Fold ultralytics-style `key=value` arguments into `args`; refuse unknown keys."""
    for token in extras:
        key, _, text = token.partition("=")
        name = key.strip().replace("-", "_")
        if name in {"command", "run", "debug"} or not hasattr(args, name):
            known = sorted(k for k in vars(args) if k not in {"command", "run", "debug"})
            parser.error(f"unrecognised argument {token!r} (key=value keys: {', '.join(known)})")
        value = yaml.safe_load(text) if text else None
        setattr(args, name, value)


def _predict(args: argparse.Namespace) -> int:
    from .model import RTDETR

    if args.source is None:
        raise DetrToolkitError("predict needs a SOURCE (an image, video, directory, glob or URL)")
    model = RTDETR(args.model)
    results = model.predict(
        args.source,
        conf=args.conf,
        imgsz=args.imgsz,
        max_det=args.max_det,
        classes=args.classes,
        device=args.device,
        batch=args.batch,
        half=args.half,
        save=args.save,
        save_txt=args.save_txt,
        save_conf=args.save_conf,
        project=args.project,
        name=args.name,
        verbose=not args.quiet,
        stream=True,
    )
    for _ in results:  # each result is printed (and saved) as it is made
        pass
    return 0


def _train(args: argparse.Namespace) -> int:
    from .engine.train_args import TrainArgs
    from .model import RTDETR

    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    settings = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.resume:
        from .engine.trainer import Trainer

        Trainer({}, None, TrainArgs.create(**settings)).train()
        return 0
    if not args.data:
        raise DetrToolkitError("train needs --data (a YOLO data.yaml, a COCO data yaml or an instances .json)")
    RTDETR(args.model).train(args.cfg, **settings)
    return 0


def _val(args: argparse.Namespace) -> int:
    from .model import RTDETR

    if not args.data:
        raise DetrToolkitError("val needs --data (a YOLO data.yaml, a COCO data yaml or an instances .json)")
    RTDETR(args.model).val(args.data, args.split, args.batch, args.imgsz, args.device, half=args.half)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .model import RTDETR

    file = RTDETR(args.model).export(args.format, args.imgsz, args.batch, args.dynamic, args.opset, args.file)
    print(f"exported {args.model} to {file}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value words are set aside first, so that `source=bus.jpg` is not taken for the positional SOURCE.
    key_values = [a for a in argv if KEY_VALUE.match(a)]
    args, extras = parser.parse_known_args([a for a in argv if not KEY_VALUE.match(a)])
    if extras:
        parser.error(f"unrecognised arguments: {' '.join(extras)}")
    _apply_key_values(parser, args, key_values)
    try:
        return args.run(args)
    except DetrToolkitError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
