"""Every setting a user gives predict, val, train and export, in one place: its type, default, allowed range and
help. Each is parsed and validated once, here, wherever it comes from: the command line (`--conf 1e-3`,
`conf=1e-3`), a YAML file (which reads `1e-3` as text) or Python keywords. A bad value is one ConfigError naming
the setting and what it allows:

    conf=1.5: must be within 0..1
    epochs='abc': must be an integer

The groups (`PredictArgs`, `ValArgs`, `TrainArgs`, `ExportArgs`) are dataclasses of these settings; the CLI builds
its options and help from them, and `RTDETR.predict/val/train/export` take them as keywords.
"""

# ruff: noqa: RUF009 (every field default is a `dataclasses.field`, made by Setting.field)
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from . import limits
from .config import load_yaml
from .errors import ConfigError

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
MAX_INTEGER = 2**31 - 1  # integer settings reach C code (sizes, seeds) that overflows beyond this
Args = TypeVar("Args", bound="SettingsGroup")


def _number_text(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One setting: default, help, kind (bool, int, float, str or list of `item`) and allowed values.

    low/high bound numbers (and list items), inclusive unless low_open/high_open; choices lists allowed strings;
    optional admits None (not set); or_bool admits true/false besides a string (resume=True or a path).
    """

    default: Any
    help: str
    kind: type = str
    item: type | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    or_bool: bool = False
    limit: limits.Limit | None = None  # a safety limit on the value (image sides)

    def field(self) -> Any:
        """A dataclass field of this setting (the default copied per instance)."""
        return dataclasses.field(default_factory=lambda: copy.deepcopy(self.default), metadata={"setting": self})

    # --- parsing ---------------------------------------------------------------------------------------------

    def parse(self, name: str, value: Any) -> Any:
        """`value` (any spelling: text from a command line or YAML, or a Python value) -> the typed value."""
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null") and self.optional):
            if self.optional or self.default is None:
                return None
            raise ConfigError(f"{name}: needs a value ({self.describe()})")
        if isinstance(value, os.PathLike):
            value = str(value)
        if self.or_bool:
            flag = self._as_bool(value)
            if flag is not None:
                return flag
            return self._scalar(name, value, str)
        if self.kind is list:
            items = self._as_list(name, value)
            return [self._scalar(f"{name}[{i}]", item, self.item or str) for i, item in enumerate(items)]
        return self._scalar(name, value, self.kind)

    @staticmethod
    def _as_bool(value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return None

    @staticmethod
    def _as_list(name: str, value: Any) -> list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    parsed = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise ConfigError(f"{name}={value!r}: not a list") from None
                if isinstance(parsed, list):
                    return parsed
                raise ConfigError(f"{name}={value!r}: not a list")
            return [part.strip() for part in text.split(",") if part.strip()]
        return [value]

    def _scalar(self, name: str, value: Any, kind: type) -> Any:
        if kind is bool:
            flag = self._as_bool(value)
            if flag is None and isinstance(value, (int, float)) and value in (0, 1):
                flag = bool(value)
            if flag is None:
                raise ConfigError(f"{name}={value!r}: must be true or false")
            return flag
        if kind is int:
            number = self._as_number(name, value, "an integer")
            if not float(number).is_integer():
                raise ConfigError(f"{name}={value!r}: must be an integer")
            return self._in_range(name, int(number))
        if kind is float:
            return self._in_range(name, float(self._as_number(name, value, "a number")))
        if isinstance(value, (dict, list, tuple, set)):
            raise ConfigError(f"{name}={value!r}: must be a single value")
        if isinstance(value, bool) or (self.choices and not isinstance(value, str)):
            raise ConfigError(f"{name}={value!r}: {self.describe()}")
        text = str(value)
        if self.choices and text not in self.choices:
            raise ConfigError(f"{name}={value!r}: must be one of {', '.join(self.choices)}")
        return text

    @staticmethod
    def _as_number(name: str, value: Any, what: str) -> float | int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: must be {what}")
        if isinstance(value, str):
            try:
                value = float(value.strip()) if not value.strip().lstrip("+-").isdigit() else int(value.strip())
            except ValueError:
                raise ConfigError(f"{name}={value!r}: must be {what}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name}={value!r}: must be {what}")
        return value

    def _in_range(self, name: str, number: float) -> float:
        if isinstance(number, int) and abs(number) > MAX_INTEGER:
            raise ConfigError(f"{name}={number}: must be at most {MAX_INTEGER}")
        low_fails = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        high_fails = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if low_fails or high_fails:
            raise ConfigError(f"{name}={_number_text(number)}: must be {self._range_text()}")
        if self.limit is not None:
            self.limit.check(int(number), f"{name}={number}")
        return number

    def _range_text(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            if not self.low_open and not self.high_open:
                return f"within {_number_text(low)}..{_number_text(high)}"
            return (f"{'above' if self.low_open else 'at least'} {_number_text(low)} and "
                    f"{'below' if self.high_open else 'at most'} {_number_text(high)}")  # fmt: skip
        if low is not None:
            return f"{'above' if self.low_open else 'at least'} {_number_text(low)}"
        return f"{'below' if self.high_open else 'at most'} {_number_text(high)}"

    def describe(self) -> str:
        """What the setting allows, for errors and help: 'an integer, at least 1', 'one of cosine, linear'."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a text or path"}
        text = f"a list of {kinds[self.item or str].split(' ', 1)[-1]}s" if self.kind is list else kinds[self.kind]
        if self.or_bool:
            text = f"true, false or {text}"
        if self.low is not None or self.high is not None:
            text += f", {self._range_text()}"
        return text


class SettingsGroup:
    """Base of the settings dataclasses: creation from any spelling, unknown keys refused by name."""

    what: ClassVar[str] = "setting"  # "training setting", ... for messages

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)}

    @classmethod
    def create(cls: type[Args], **values: Any) -> Args:  # noqa: PYI019 (typing.Self needs Python 3.11)
        """Parse and validate `values` (unknown keys refused); the rest keep their defaults."""
        settings = cls.settings()
        unknown = sorted(set(values) - set(settings))
        if unknown:
            raise ConfigError(f"unknown {cls.what}(s) {unknown} (known: {', '.join(sorted(settings))})")
        group = cls(**{name: settings[name].parse(name, value) for name, value in values.items()})
        group.check()
        return group

    def check(self) -> None:
        """Checks between settings (none by default)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- settings several groups share -----------------------------------------------------------------------------

IMGSZ = Setting(None, "model input size, a multiple of the model's stride (default: the model's own)", int, low=1,
                optional=True, limit=limits.IMAGE_SIZE)  # fmt: skip
DEVICE = Setting(None, "cpu, cuda, cuda:N, N or mps (default: CUDA if available)", str, optional=True)
HALF = Setting(False, "half precision: float16 on CUDA, bfloat16 on CPUs with native bf16 (float32 elsewhere)", bool)
VERBOSE = Setting(True, "print progress and results", bool)
THREADS = Setting(0, "CPU threads (0: auto, following the load on a shared CPU; see engine/threads.py)", int, low=0,
                  high=1024)  # fmt: skip


def _batch(default: int, help: str) -> Setting:
    return Setting(default, help, int, low=1, high=65_536)


def check_run_name(name: str) -> None:
    """A run name is one folder inside `project`: no path separators, not '.' or '..'."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ConfigError(f"name={name!r}: must be a single folder name (no path separators; set project= for where)")


# --- the groups ------------------------------------------------------------------------------------------------


@dataclass
class PredictArgs(SettingsGroup):
    """`detect predict` / `RTDETR.predict()`: what to keep, how to batch, what to save (ultralytics' names)."""

    what: ClassVar[str] = "predict setting"
    conf: float = Setting(0.25, "keep detections scoring above this", float, low=0, high=1).field()
    iou: float = Setting(0.7, "track: boxes overlapping a better one by more than this are dropped before the tracker "
                         "sees them; predict ignores it (DETRs need no NMS)", float, low=0, high=1).field()  # fmt: skip
    imgsz: int | None = IMGSZ.field()
    max_det: int = Setting(300, "at most this many detections per image", int, low=1).field()
    classes: list[int] | None = Setting(None, "keep only these class indices", list, int, low=0, optional=True).field()
    batch: int = _batch(1, "frames per forward pass").field()
    device: str | None = DEVICE.field()
    half: bool = HALF.field()
    threads: int = THREADS.field()
    save: bool = Setting(False, "save plotted images and videos", bool).field()
    save_txt: bool = Setting(False, "save YOLO-format labels (class cx cy w h)", bool).field()
    save_conf: bool = Setting(False, "add confidences to saved labels", bool).field()
    save_crop: bool = Setting(False, "save each detection's image region under crops/<class>/", bool).field()
    project: str = Setting("runs", "folder of saved runs").field()
    name: str = Setting("predict", "run name, incremented if taken (predict-2, ...)").field()
    verbose: bool = VERBOSE.field()

    def check(self) -> None:
        check_run_name(self.name)


# Our tracker names (ultralytics' `tracker=` names) -> the trackers package's classes.
TRACKERS = {"bytetrack": "ByteTrackTracker", "botsort": "BoTSORTTracker", "ocsort": "OCSORTTracker",
            "sort": "SORTTracker"}  # fmt: skip


def tracker_kind(tracker: str) -> tuple[str, dict[str, Any] | None]:
    """`tracker=` -> (tracker name, its YAML file's settings or None): a name (`bytetrack`, or ultralytics'
    `bytetrack.yaml` where no such file is) or a YAML file whose `tracker_type` names one (read within the YAML
    limits)."""
    path = Path(str(tracker)).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") and path.exists():  # a bare name is ours, whatever lies in the cwd
        spec = load_yaml(path)
        kind = str(spec.get("tracker_type", "")).lower()
        if kind not in TRACKERS:
            raise ConfigError(
                f"{path}: tracker_type {spec.get('tracker_type')!r} unknown (known: {', '.join(TRACKERS)})"
            )
        return kind, spec
    kind = path.name.lower().removesuffix(".yaml").removesuffix(".yml")
    if kind not in TRACKERS:
        raise ConfigError(f"tracker={tracker!r}: unknown tracker (known: {', '.join(TRACKERS)}), and no such file")
    return kind, None


@dataclass
class TrackArgs(PredictArgs):
    """`detect track` / `RTDETR.track()`: predict's settings, and the tracker's."""

    what: ClassVar[str] = "track setting"
    name: str = Setting("track", "run name, incremented if taken (track-2, ...)").field()
    tracker: str = Setting(
        "bytetrack",
        "bytetrack, botsort, ocsort or sort, or a YAML file of its settings (tracker_type and the "
        "trackers package's arguments or ultralytics' keys)",
    ).field()
    persist: bool = Setting(
        False, "continue the previous call's tracks (frames given one call at a time)", bool
    ).field()
    save_mot: bool = Setting(False, "save tracks as MOT Challenge text files under mot/", bool).field()

    def check(self) -> None:
        super().check()
        tracker_kind(self.tracker)


class _ReadsDataset:
    """Groups with the dataset subset settings (on_bad_label, categories, max_images, images)."""

    @property
    def dataset(self) -> dict[str, Any]:
        """The keyword arguments of `data.splits.load_split` (subset and label handling)."""
        return {"on_error": self.on_bad_label, "categories": self.categories, "max_images": self.max_images,
                "images": self.images}  # fmt: skip


@dataclass
class ValArgs(_ReadsDataset, SettingsGroup):
    """`detect val` / `RTDETR.val()`: COCO metrics on a dataset split."""

    what: ClassVar[str] = "val setting"
    data: str = Setting("", "YOLO data.yaml, COCO data yaml (format: coco) or COCO instances .json").field()
    split: str = Setting("val", "dataset split").field()
    batch: int = _batch(8, "images per forward pass").field()
    imgsz: int | None = IMGSZ.field()
    device: str | None = DEVICE.field()
    half: bool = HALF.field()
    threads: int = THREADS.field()
    verbose: bool = VERBOSE.field()
    on_bad_label: str = Setting("error", "a malformed label: stop with its file and line, or warn and skip it",
                                choices=("error", "skip")).field()  # fmt: skip
    categories: list[str] | None = Setting(None, "COCO subset: category names or ids", list, str, optional=True).field()
    max_images: int | None = Setting(None, "COCO subset: the first N images", int, low=1, optional=True).field()
    images: str | None = Setting(None, "COCO: the image folder when data is an instances .json", optional=True).field()

    def check(self) -> None:
        if not self.data:
            raise ConfigError("val needs data= (a YOLO data.yaml, a COCO data yaml or an instances .json)")


@dataclass
class ExportArgs(SettingsGroup):
    """`detect export` / `RTDETR.export()`."""

    what: ClassVar[str] = "export setting"
    format: str = Setting("onnx", "export format: ONNX, or OpenVINO's (converted from the ONNX graph)",
                          choices=("onnx", "openvino")).field()  # fmt: skip
    imgsz: int | None = Setting(None, "input size, fixed in the graph (default: the model's)", int, low=1,
                                optional=True, limit=limits.IMAGE_SIZE).field()  # fmt: skip
    batch: int = _batch(1, "batch size traced").field()
    dynamic: bool = Setting(False, "accept any batch size, and any input size where the model allows it", bool).field()
    opset: int = Setting(18, "ONNX opset (GridSample needs 16; the dynamo exporter writes 18 and up)", int, low=16,
                         high=23).field()  # fmt: skip
    exporter: str = Setting("dynamo", "torch.export-based exporter (falls back to the TorchScript tracer where it "
                            "cannot trace a model) or the TorchScript tracer",
                            choices=("dynamo", "torchscript")).field()  # fmt: skip
    file: str | None = Setting(None, "output file, or folder for OpenVINO (default: next to the checkpoint)",
                               optional=True).field()  # fmt: skip
    int8: bool = Setting(False, "also write an int8 model (<name>-int8.onnx, <name>-int8_openvino_model), calibrated "
                         "on data=", bool).field()  # fmt: skip
    data: str = Setting("", "images that calibrate int8: a dataset (its train split; its val split scores the int8 "
                        "file) or a folder of images").field()  # fmt: skip
    calibration: int = Setting(64, "images to calibrate int8 on", int, low=1).field()
    val: bool = Setting(True, "score the int8 file against the float32 one on the val split", bool).field()


@dataclass
class TrainArgs(_ReadsDataset, SettingsGroup):
    """`detect train` / `RTDETR.train()`, with RT-DETR's recipe as defaults; a YAML file (`cfg`) and keywords
    override them. `given` holds the names set explicitly (by the file or keywords), which resume checks."""

    what: ClassVar[str] = "training setting"
    given: ClassVar[frozenset[str]] = frozenset()
    data: str = Setting("", "YOLO data.yaml, COCO data yaml (format: coco) or COCO instances .json").field()
    model: str = Setting("rtdetr-l.yaml", "model config or weights `detect train` starts from (a recipe names its "
                         "model; Python trains the RTDETR object's)").field()  # fmt: skip
    epochs: int = Setting(72, "passes over the training set", int, low=1).field()
    time: float | None = Setting(None, "hours of training (overrides epochs): the epochs that fit are estimated from "
                                 "the first ones, and the schedule and augmentation phases fitted to them", float,
                                 low=0, low_open=True, optional=True).field()  # fmt: skip
    patience: int = Setting(0, "stop after this many epochs without a better val mAP50-95 (0: never)", int,
                            low=0).field()  # fmt: skip
    batch: int = _batch(8, "images per optimizer step, over all processes").field()
    imgsz: int = Setting(640, "training and validation size", int, low=1, limit=limits.IMAGE_SIZE).field()
    workers: int = Setting(0 if (os.cpu_count() or 1) <= 2 else 2, "data-loading processes (0: in the training "
                           "process, fastest on 2 cores)", int, low=0, high=256).field()  # fmt: skip
    device: str | None = DEVICE.field()
    threads: int = THREADS.field()
    project: str = Setting("runs/train", "folder of training runs").field()
    name: str = Setting("exp", "run name, incremented if taken (exp-2, ...)").field()
    exist_ok: bool = Setting(False, "reuse project/name instead of incrementing it", bool).field()
    resume: str | bool = Setting(False, "continue a run: true for the last one, or its weights/last.pt", str,
                                 or_bool=True).field()  # fmt: skip
    seed: int = Setting(0, "seed of initial weights, data order and augmentation", int, low=0, high=2**31 - 1).field()
    lr: float = Setting(1e-4, "AdamW learning rate of everything but the backbone", float, low=0, low_open=True).field()
    lr_backbone: float = Setting(1e-5, "AdamW learning rate of the backbone", float, low=0).field()
    weight_decay: float = Setting(1e-4, "AdamW weight decay (not on norms and biases)", float, low=0).field()
    warmup_iters: int = Setting(2000, "linear learning-rate warm-up, in optimizer steps", int, low=0).field()
    schedule: str = Setting("cosine", "learning rate after warm-up", choices=("cosine", "linear", "constant")).field()
    lrf: float = Setting(0.01, "final learning rate, as a fraction of the initial one", float, low=0, high=1).field()
    clip_grad: float = Setting(0.1, "max gradient norm (0: off)", float, low=0).field()
    accumulate: int = Setting(1, "batches per optimizer step", int, low=1).field()
    ema_decay: float = Setting(0.9999, "EMA decay of the weights", float, low=0, high=1, high_open=True).field()
    ema_tau: float = Setting(2000, "EMA decay ramps up as 1 - exp(-updates / tau)", float, low=0,
                             low_open=True).field()  # fmt: skip
    amp: str = Setting("bf16", "CUDA mixed precision (CPU trains in float32)", choices=("bf16", "fp16", "none")).field()
    photometric: float = Setting(0.5, "probability of photometric distortion", float, low=0, high=1).field()
    zoom_out: float = Setting(0.5, "probability of zooming out", float, low=0, high=1).field()
    iou_crop: float = Setting(0.8, "probability of an IoU crop", float, low=0, high=1).field()
    hflip: float = Setting(0.5, "probability of a horizontal flip", float, low=0, high=1).field()
    mosaic: float = Setting(0.0, "probability of a mosaic of four images (each at about its own scale)", float,
                            low=0, high=1).field()  # fmt: skip
    mixup: float = Setting(0.0, "probability of blending in a second training sample (and its boxes)", float, low=0,
                           high=1).field()  # fmt: skip
    close_mosaic: float = Setting(0.1, "share of the final epochs trained without mosaic and mixup (DEIM's plain "
                                  "tail; a share, so it fits time=)", float, low=0, high=1).field()  # fmt: skip
    o2m: int = Setting(0, "one-to-many branch: extra queries matched to this many copies of the targets (hybrid "
                       "matching; training only; 0: off)", int, low=0, high=64).field()  # fmt: skip
    o2m_queries: int = Setting(0, "queries of the one-to-many branch (0: o2m x the most objects in an image, at "
                               "least the model's queries)", int, low=0, high=10000).field()  # fmt: skip
    o2m_weight: float = Setting(1.0, "weight of the one-to-many branch's losses", float, low=0).field()
    multi_scale: list[int] = Setting([], "training sizes to draw per batch (empty: imgsz only)", list, int, low=1,
                                     limit=limits.IMAGE_SIZE).field()  # fmt: skip
    val: bool = Setting(True, "evaluate on the val split after every epoch", bool).field()
    plots: bool = Setting(True, "results.png every epoch; first batch, PR curves and confusion matrix", bool).field()
    loggers: list[str] = Setting(["tensorboard"], "experiment trackers (the default where its package is installed)",
                                 list, str, choices=("tensorboard", "mlflow", "wandb")).field()  # fmt: skip
    on_bad_label: str = ValArgs.settings()["on_bad_label"].field()
    categories: list[str] | None = ValArgs.settings()["categories"].field()
    max_images: int | None = ValArgs.settings()["max_images"].field()
    images: str | None = ValArgs.settings()["images"].field()
    verbose: bool = VERBOSE.field()

    @classmethod
    def from_sources(cls, cfg: str | Path | None = None, defaults: dict | None = None, **overrides: Any) -> TrainArgs:
        """Defaults <- `defaults` (e.g. the model's imgsz) <- the YAML file `cfg` <- keyword overrides."""
        given = {**(load_yaml(cfg) if cfg else {}), **overrides}
        args = cls.create(**{**(defaults or {}), **given})
        args.given = frozenset(given)
        return args

    def check(self) -> None:
        if not self.data and not self.resume:
            raise ConfigError("train needs --data or data= (a YOLO data.yaml, a COCO data yaml or an instances .json)")
        check_run_name(self.name)

    @property
    def augment(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("photometric", "zoom_out", "iou_crop", "hflip")}
