"""The `detect` command.

    detect predict bus.jpg --model rtdetr-l.pt --conf 0.4 --save
    detect predict source=bus.jpg model=rtdetr-l.pt conf=0.4 save=True     # ultralytics-style, same thing
    detect track video.mp4 --model rtdetr-l.pt --tracker bytetrack --save
    detect train --model configs/rtdetr-l.yaml --data data.yaml --epochs 72 --batch 8
    detect train --resume runs/train/exp/weights/last.pt
    detect val --model runs/train/exp/weights/best.safetensors --data data.yaml
    detect export --model runs/train/exp/weights/best.safetensors --format onnx --dynamic
    detect export --model best.safetensors --format openvino --int8 --data data.yaml

Each command's options are its settings (`settings.py`: PredictArgs, TrackArgs, ValArgs, TrainArgs, ExportArgs), parsed
and validated there. Errors in the user's input print one line (`error: ...`) and exit with status 2; `--debug`
shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from .errors import ConfigError, DetrToolkitError
from .settings import ExportArgs, PredictArgs, SettingsGroup, TrackArgs, TrainArgs, ValArgs

EXIT_USAGE = 2
KEY_VALUE = re.compile(r"^[A-Za-z_][\w-]*=")
# The options that are not settings of a group: what to load, and where from.
MODEL_HELP = (
    "checkpoint (.pt, .safetensors, transformers folder), exported model (.onnx, OpenVINO folder) "
    "or model config (.yaml)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised (printed by `main` in one line) instead of printed with the usage."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def _add_settings(parser: argparse.ArgumentParser, group: type[SettingsGroup]) -> None:
    """One option per setting of `group`: `--name VALUE`, or a flag for a true/false setting (`--save`, `--no-val`).
    Every value stays text here; the group parses and validates it."""
    for name, setting in group.settings().items():
        flag = name.replace("_", "-")
        default = "" if setting.default in (None, "", []) else f"; default {setting.default}"
        if setting.kind is bool:
            if setting.default:
                parser.add_argument(f"--no-{flag}", dest=name, action="store_const", const=False,
                                    help=f"do not {setting.help}")  # fmt: skip
            else:
                parser.add_argument(f"--{flag}", dest=name, action="store_const", const=True, help=setting.help)
        elif setting.or_bool:
            parser.add_argument(f"--{flag}", dest=name, nargs="?", const="true", help=setting.help)
        else:
            nargs = "+" if setting.kind is list else None
            parser.add_argument(f"--{flag}", dest=name, nargs=nargs, metavar=name.upper(),
                                help=f"{setting.help} ({setting.describe()}{default})")  # fmt: skip
    parser.set_defaults(group=group, **dict.fromkeys(group.settings()))


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="detect",
        description="Real-time detection transformers (RT-DETR, RF-DETR, LW-DETR): predict, train, validate, export.",
        epilog="Options may also be given ultralytics-style as key=value (e.g. conf=0.4 save=True).",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    predict = commands.add_parser(
        "predict",
        help="detect objects in images, videos, directories or globs",
        description="Detect objects and print one line per image; --save writes plotted images to runs/predict*.",
        epilog="Also accepts key=value arguments, e.g. `detect predict source=bus.jpg conf=0.4 save=True`.",
    )
    predict.add_argument("source", nargs="?", help="image, video, directory, glob or URL")
    predict.add_argument("--model", default="rtdetr-l.pt", help=f"{MODEL_HELP}; default rtdetr-l.pt")
    _add_settings(predict, PredictArgs)
    predict.set_defaults(run=_predict)

    track = commands.add_parser(
        "track",
        help="detect and track objects through a video (ids drawn on saved videos)",
        description="Track objects through the frames of a video (or a folder of frames) with ByteTrack, BoT-SORT, "
        "OC-SORT or SORT (the trackers package: pip install 'detr-toolkit[track]'); --save writes the video "
        "with ids, --save-mot the tracks as MOT Challenge text.",
        epilog="Also accepts key=value arguments, e.g. `detect track source=video.mp4 tracker=botsort save=True`.",
    )
    track.add_argument("source", nargs="?", help="video, directory of frames, glob or URL")
    track.add_argument("--model", default="rtdetr-l.pt", help=f"{MODEL_HELP}; default rtdetr-l.pt")
    _add_settings(track, TrackArgs)
    track.set_defaults(run=_predict)

    train = commands.add_parser(
        "train",
        help="train or fine-tune a model on a YOLO or COCO dataset",
        description="Train (or fine-tune: another class count re-initialises only the class heads). Every run "
        "writes runs/train/NAME/{args.yaml, weights/{last,best}.*, results.csv, results.png}.",
        epilog="Also accepts key=value arguments, e.g. `detect train data=data.yaml epochs=10 lr=1e-4`.",
    )
    train.add_argument("--cfg", help="YAML file of training settings (options and key=value arguments override it)")
    _add_settings(train, TrainArgs)
    train.set_defaults(run=_train)

    val = commands.add_parser("val", help="COCO metrics of a model on a dataset split")
    val.add_argument("--model", default="rtdetr-l.pt", help=f"{MODEL_HELP}; default rtdetr-l.pt")
    _add_settings(val, ValArgs)
    val.set_defaults(run=_val)

    export = commands.add_parser(
        "export",
        help="write the model as ONNX (onnxruntime, TensorRT, ...) or in OpenVINO's format",
        description="Export: input `images` (batch, 3, imgsz, imgsz) RGB 0..1 -> `output0` (batch, queries, "
        "4 + classes): cx cy w h in 0..1 and class scores, ultralytics' RT-DETR layout.",
    )
    export.add_argument("--model", default="rtdetr-l.pt", help=f"{MODEL_HELP}; default rtdetr-l.pt")
    _add_settings(export, ExportArgs)
    export.set_defaults(run=_export)
    return parser


def _apply_key_values(args: argparse.Namespace, tokens: list[str]) -> None:
    """Fold ultralytics-style `key=value` arguments into `args` (as text, parsed by the settings); refuse unknown
    keys by name."""
    known = {k for k in vars(args) if k not in {"command", "run", "debug", "group"}}
    for token in tokens:
        key, _, text = token.partition("=")
        name = key.strip().replace("-", "_")
        if name not in known:
            raise ConfigError(f"unrecognised argument {token!r} (key=value keys: {', '.join(sorted(known))})")
        setattr(args, name, text)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave (options left out stay at the group's defaults)."""
    return {name: getattr(args, name) for name in args.group.settings() if getattr(args, name) is not None}


def _predict(args: argparse.Namespace) -> int:
    """`detect predict` and `detect track`."""
    from .model import RTDETR

    if args.source is None:
        raise DetrToolkitError(f"{args.command} needs a SOURCE (an image, video, directory, glob or URL)")
    settings = args.group.create(**_settings(args))  # settings errors before the model is loaded
    model = RTDETR(args.model)
    run = model.track if args.command == "track" else model.predict
    for _ in run(args.source, stream=True, **settings.to_dict()):
        pass  # each result is printed (and saved) as it is made
    return 0


def _train(args: argparse.Namespace) -> int:
    from .model import RTDETR

    settings = _settings(args)
    train_args = TrainArgs.from_sources(args.cfg, **settings)  # parsed once: errors before the model is loaded
    if train_args.resume:
        from .engine.trainer import Trainer

        Trainer.resume(train_args)
        return 0
    RTDETR(train_args.model).train(args.cfg, **settings)
    return 0


def _val(args: argparse.Namespace) -> int:
    from .model import RTDETR

    settings = ValArgs.create(**_settings(args))
    RTDETR(args.model).val(**settings.to_dict())
    return 0


def _export(args: argparse.Namespace) -> int:
    from .model import RTDETR

    settings = ExportArgs.create(**_settings(args))
    file = RTDETR(args.model).export(**settings.to_dict())
    print(f"exported {args.model} to {file}")
    return 0


def _one_line(message: object) -> str:
    """A message as one line: a path may hold a newline."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


@contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """For the command line: warnings print as one `warning: ...` line each, and native libraries (libpng,
    libjpeg, FFmpeg, OpenCV) keep their own stderr lines to themselves: the problems they print about are
    reported here, in one line. Python's stderr moves to a copy of the terminal's; the process's native stderr
    (file descriptor 2) goes to /dev/null until the command ends. `--debug` leaves everything as it is."""
    showwarning = warnings.showwarning
    warnings.showwarning = lambda message, *_: print(f"warning: {_one_line(message)}", file=sys.stderr)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when OpenCV first opens a video
    stderr, saved = sys.stderr, None
    try:
        real = stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # stderr already captured (pytest, a notebook)
        real = False
    if real:
        stderr.flush()
        saved = os.dup(2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=stderr.encoding, errors="backslashreplace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        yield
    finally:
        warnings.showwarning = showwarning
        if saved is not None:
            sys.stderr.flush()
            sys.stderr.close()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = stderr


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with nullcontext() if debug else _quiet_native_logs():
        return _main(argv, debug)


def _main(argv: list[str], debug: bool) -> int:
    try:
        parser = _build_parser()
        # key=value words are set aside first, so that `source=bus.jpg` is not taken for the positional SOURCE.
        args, extras = parser.parse_known_args([a for a in argv if not KEY_VALUE.match(a)])
        if extras:
            raise ConfigError(f"unrecognised arguments: {' '.join(extras)}")
        _apply_key_values(args, [a for a in argv if KEY_VALUE.match(a)])
        return args.run(args)
    except DetrToolkitError as error:
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # the machine's refusal (permissions, a full disk) rather than a bug of ours
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {_one_line(where)}{error.strerror or error} (--debug shows where)", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if debug or not _out_of_memory(error):
            raise
        print(f"error: out of memory ({_one_line(str(error) or type(error).__name__)[:160]}): ask for less (a smaller "
              "imgsz= or batch=)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed (Python's, torch's on the CPU or a GPU)."""
    text = str(error)
    return isinstance(error, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text


if __name__ == "__main__":
    sys.exit(main())
