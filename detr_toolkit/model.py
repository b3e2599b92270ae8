"""`RTDETR`, the Python entry point, shaped like ultralytics' model class.

from detr_toolkit import RTDETR
model = RTDETR("rtdetr-l.pt")              # ultralytics checkpoint, our .safetensors, or a config YAML
results = model.predict("bus.jpg")         # list of Results
results[0].show()
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import weights
from .config import class_names
from .engine.callbacks import Callbacks, add_callback, check_event, default_callbacks
from .engine.device import select_device
from .engine.exported_model import ExportedModel
from .engine.onnx_model import OnnxModel
from .engine.openvino_model import OpenVinoModel
from .engine.predictor import Inference, Predictor, TorchInference, inference_dtype
from .engine.saver import PredictionSaver
from .engine.threads import threads_for_call
from .engine.tracking import make_tracker, track, tracker_settings
from .errors import CheckpointError, ConfigError, DetrToolkitError
from .nn import DEFAULT_IMGSZ, Detector, build_model
from .results import Results
from .settings import ExportArgs, PredictArgs, TrackArgs, TrainArgs, ValArgs


class RTDETR:
    """A detector and its class names, with predict / info / save.

    Attributes:
        model: the `Detector` (torch module).
        names: {class index: name}.
        config: the model config (the YAML that rebuilds `model`), without names.
        ckpt_path: where the model came from.
    """

    def __init__(self, model: str | Path | dict = "rtdetr-l.pt", device: str | int | torch.device | None = None):
        self.ckpt_path = str(model) if not isinstance(model, dict) else None
        self._predictor: Predictor | None = None
        self._tracker: tuple[tuple, Any] | None = None  # (settings, tracker) of the last track(), for persist=True
        self.callbacks: Callbacks = default_callbacks()  # of training; see add_callback
        # an exported file (ONNX, OpenVINO): predicts and validates only
        self.exported: ExportedModel | None = (
            None
            if isinstance(model, dict)
            else _open_exported(model, select_device(device) if device is not None else None)
        )
        if self.exported is not None:
            self.model, self.names, self.config, self.pretrained = None, self.exported.names, self.exported.config, True
            return
        config, state = weights.load(model)
        source = "model config" if isinstance(model, dict) else str(model)
        names = config.pop("names", None)
        self.config = config
        try:
            self.model: Detector = build_model(config)
            self.names: dict[int, str] = class_names(names, config["nc"], "model config")
        except DetrToolkitError as error:  # a bad or oversized config: name the file it came from
            raise type(error)(f"{source}: {error}") from None
        self.pretrained = state is not None  # False: random weights from a config (and its pretrained backbone)
        if state is not None:
            weights.load_state(self.model, state, source)
        else:
            weights.load_pretrained_backbone(self.model, config)
        self.model.eval().to(select_device(device))

    def load(self, source: str | Path) -> RTDETR:
        """Start from the weights of `source` (any checkpoint `RTDETR` reads) where they fit this model: every tensor
        of the same name and shape (ultralytics' `YOLO("yolov8n-seg.yaml").load("yolov8n.pt")`: a detector's
        weights into a segmentation model, whose mask head starts fresh), and its class names where it has as many
        classes (its class heads came too). Says how many tensors it took; -> self."""
        detector = self._torch_model("load weights into")
        config, state = weights.load(source)
        if state is None:
            raise ConfigError(f"{source}: a model config, not weights")
        copied, total = weights.transfer_state(detector, state)
        if not copied:
            raise CheckpointError(f"{source}: none of its tensors fit this model (another architecture)")
        if config.get("nc") == len(self.names):
            self.names = class_names(config.get("names"), config["nc"], str(source))
        print(f"loaded {copied}/{total} tensors from {source}")
        self.pretrained = True
        return self

    @property
    def task(self) -> str:
        """The task, by ultralytics' names (SAHI reads it): "segment" with a mask head, else "detect"."""
        return self.exported.task if self.exported is not None else self.model.task

    # --- predict -----------------------------------------------------------------------------------------

    def predict(
        self, source: Any = None, *, stream: bool = False, **settings: Any
    ) -> list[Results] | Iterator[Results]:
        """Detect objects in `source` (path, directory, glob, URL, list, PIL, numpy BGR, tensor, video).

        Returns a list of Results, or a generator of them with `stream=True` (for long videos). Settings (see
        `settings.PredictArgs`): conf, imgsz, max_det, classes, batch, device, half, save, save_txt, save_conf,
        save_crop, project, name, verbose. Saved outputs go to `project/name` (incremented: predict-2, ...).
        """
        return self._run(PredictArgs.create(**settings), source, stream, tracker=None)

    def track(self, source: Any = None, *, stream: bool = False, **settings: Any) -> list[Results] | Iterator[Results]:
        """Detect and track objects through the frames of `source` (a video, a folder or list of frames, or frames
        given one call at a time with persist=True); each Results' boxes carry their track `id`.

        Settings (see `settings.TrackArgs`): those of predict, and tracker (bytetrack, botsort, ocsort, sort; on
        the `trackers` package: pip install 'detr-toolkit[track]'), persist (continue the last call's tracks),
        save_mot (MOT Challenge text files). Tracks restart with each new video of a source.
        """
        args = TrackArgs.create(**settings)
        settings = tracker_settings(args.tracker)
        if self._tracker is None or not args.persist or self._tracker[0] != settings:
            self._tracker = (settings, make_tracker(settings))
        return self._run(args, source, stream, tracker=self._tracker[1])

    def _run(self, args: PredictArgs, source: Any, stream: bool, tracker: Any) -> list[Results] | Iterator[Results]:
        args.imgsz = self._input_size(args.imgsz, args.batch)
        if args.classes is not None and not set(args.classes) <= set(self.names):
            raise ConfigError(f"classes={args.classes}: the model has classes 0..{len(self.names) - 1}")
        with threads_for_call(args.threads):  # building it runs on the setting's threads too
            predictor = self._get_predictor(args.device, args.half)
        save_mot = getattr(args, "save_mot", False)
        saving = args.save or args.save_txt or args.save_crop or save_mot
        saver = PredictionSaver(args.project, args.name, args.save, args.save_txt, args.save_conf, args.save_crop,
                                save_mot)  # fmt: skip
        generator = self._predict_stream(predictor, source, args, saver if saving else None, tracker)
        return generator if stream else list(generator)

    __call__ = predict

    def _input_size(self, imgsz: int | None, batch: int) -> int:
        """The input size to run: `imgsz`, or the model's; checked against what the model takes, and a batch of
        `batch` of them against the memory limit."""
        return (self.exported or self.model).check_input_size(imgsz or self.imgsz, batch=batch)

    def _inference(self, device: Any, half: bool) -> Inference:
        """The model ready to run on `device` (default: the model's) in `half` precision or not: the exported file,
        or a cached `TorchInference`, rebuilt when the device or precision asked for changes, or the model's weights
        (`model.model.load_state_dict(...)`, training in between)."""
        if self.exported is not None:
            self.exported = self.exported.reopen(select_device(device) if device is not None else None, half)
            return self.exported
        target = select_device(device) if device is not None else self.device
        dtype = inference_dtype(target, half)
        cached = self._predictor.model if self._predictor else None
        if isinstance(cached, TorchInference) and cached.serves(self.model, target, dtype):
            return cached
        return TorchInference(self.model, target, dtype)

    def _get_predictor(self, device: Any, half: bool) -> Predictor:
        """The cached predictor, rebuilt when its model is (see `_inference`)."""
        model = self._inference(device, half)
        if self._predictor is None or self._predictor.model is not model:
            self._predictor = Predictor(model, self.names)
        return self._predictor

    def _torch_model(self, action: str) -> Detector:
        """The PyTorch detector, or a ConfigError saying that an exported file cannot `action`."""
        if self.model is None:
            raise ConfigError(
                f"{self.ckpt_path}: an exported model predicts, tracks and validates only; to {action}, load the "
                ".pt or .safetensors it was exported from"
            )
        return self.model

    @staticmethod
    def _predict_stream(
        predictor: Predictor, source: Any, args: PredictArgs, saver: PredictionSaver | None, tracker: Any = None
    ) -> Iterator[Results]:
        verbose = args.verbose
        video = None  # the video whose frames are being tracked
        with threads_for_call(args.threads):  # restored when the stream ends
            try:
                for frame, result, (height, width) in predictor.stream(source, args):
                    if tracker is not None:
                        if frame.video_frame is not None and frame.path != video:
                            if video is not None:
                                tracker.reset()  # a new video: new tracks
                            video = frame.path
                        result = track(tracker, result, args.iou)
                    if saver:
                        saver.add(frame, result)
                    if verbose:
                        where = Path(frame.path).name
                        where += "" if frame.video_frame is None else f" frame {frame.video_frame}"
                        print(f"{where}: {height}x{width} {result.verbose()}{result.speed['inference']:.1f}ms")
                    yield result
            finally:
                if saver:
                    saver.close()
                    if verbose and saver.save_dir is not None:
                        print(f"Results saved to {saver.save_dir}")

    # --- train / val --------------------------------------------------------------------------------------

    def train(self, cfg: str | Path | None = None, **settings: Any) -> Path:
        """Train on `data=` (see `settings.TrainArgs` for every setting; `cfg` a YAML file of them); returns the run
        folder. The model then holds the best weights (EMA, by val mAP50-95). A dataset with another class count
        re-initialises the class heads only (fine-tuning).
        """
        from .engine.trainer import Trainer

        detector = self._torch_model("train")
        args = TrainArgs.from_sources(cfg, {"imgsz": self.imgsz}, **settings)
        with threads_for_call(args.threads):  # a resumed run's own setting is put in force by the trainer
            if args.resume:
                save_dir = Trainer.resume(args, self.callbacks)
            else:
                state = detector.state_dict() if self.pretrained else None  # else the trainer uses its seed
                save_dir = Trainer({**self.config, "names": self.names}, state, args, callbacks=self.callbacks).train()
        weights_dir = save_dir / "weights"
        trained = weights_dir / "best.safetensors" if (weights_dir / "best.safetensors").is_file() else None
        callbacks = self.callbacks
        self.__init__(trained or weights_dir / "last.safetensors", device=args.device)
        self.callbacks = callbacks
        return save_dir

    def add_callback(self, event: str, function: Callable[[Any], Any]) -> None:
        """Run `function(trainer)` at `event` of every later `train()` (ultralytics' event names; the events and
        what the trainer holds at each: engine/callbacks.py)."""
        add_callback(self.callbacks, event, function)

    def clear_callback(self, event: str) -> None:
        """Remove every callback of `event`."""
        self.callbacks[check_event(event)].clear()

    def val(self, data: str | Path | None = None, **settings: Any) -> dict[str, Any]:
        """COCO metrics on a dataset split -> {"metrics": {mAP50-95, mAP50, ...}, "per_class": {name: AP50-95}}.

        Settings (see `settings.ValArgs`): split, batch, imgsz, device, half (compute as `predict(half=True)`
        does), verbose, and the dataset subset (categories, max_images, images, on_bad_label).
        """
        from .data.dataset import DetectionDataset
        from .data.splits import load_split
        from .engine.validator import evaluate

        args = ValArgs.create(**({"data": data} if data is not None else {}), **settings)
        annotations, names = load_split(args.data, args.split, **args.dataset)
        if len(names) != len(self.names):
            raise ConfigError(f"{args.data}: {len(names)} classes, but the model has {len(self.names)}")
        if not any(len(annotation.boxes) for annotation in annotations):  # COCO metrics are -1 (undefined) then
            warnings.warn(f"{args.data}: its {args.split} split has no annotated objects: the metrics are -1 "
                          "(undefined)", stacklevel=2)  # fmt: skip
        dataset = DetectionDataset(annotations, names, self._input_size(args.imgsz, args.batch))
        with threads_for_call(args.threads):
            stats, per_class = evaluate(self._inference(args.device, args.half), dataset, args.batch)
        if args.verbose:
            print(f"{args.data} ({args.split}, {len(dataset)} images): " + "  ".join(
                f"{k} {stats[k]:.3f}" for k in ("mAP50-95", "mAP50", "mAP75", "AR100", "mask_mAP50-95", "mask_mAP50")
                if k in stats))  # fmt: skip
        return {"metrics": stats, "per_class": {names[c]: ap for c, ap in per_class.items()}}

    # --- export ------------------------------------------------------------------------------------------

    def export(self, **settings: Any) -> str:
        """Write the model for deployment; -> the path written (default: next to the checkpoint, `<name>.onnx` or
        the folder `<name>_openvino_model`).

        Settings (see `settings.ExportArgs`): format (onnx, openvino), imgsz, batch, dynamic, opset, exporter, file,
        int8 (with data, calibration, val: -> the int8 file or folder, its val mAP printed; the float32 one is
        written beside it unless an earlier export is there). The graph: input `images` (batch, 3, H, W) RGB 0..1,
        output `output0` (batch, queries, 4 + classes): cx cy w h in 0..1 and class scores, as ultralytics exported
        RT-DETR before 8.4, and a segmentation model's `output1` (batch, queries, H / 4, W / 4) mask logits. dynamic:
        any batch size, and any input size (a multiple of the stride) where the model allows it. OpenVINO's format is
        converted from the ONNX graph (see `engine/openvino_model.py`).
        """
        from .engine.exporter import export_model

        source = Path(self.ckpt_path) if self.ckpt_path else Path("model")
        config = {**self.config, "imgsz": self.imgsz}
        written = export_model(self._torch_model("export"), config, self.names, source, ExportArgs.create(**settings),
                               score_int8=self._score_int8)  # fmt: skip
        return str(written)

    @staticmethod
    def _score_int8(int8: Path, float32: Path, data: str, imgsz: int) -> None:
        """Print the int8 file's val mAP (box, and mask for a segmentation model) beside the float32 one's, where
        `data` is a dataset of the model's classes."""
        if Path(data).is_dir():
            print(f"int8 not scored: {data} is a folder of images (a dataset file scores it)")
            return
        try:
            scores = {precision: RTDETR(path).val(data, imgsz=imgsz, verbose=False)["metrics"]
                      for precision, path in (("int8", int8), ("float32", float32))}  # fmt: skip
        except ConfigError as error:  # another dataset's classes: it calibrates, it cannot score
            print(f"int8 not scored: {error}")
            return
        keys = [key for key in ("mAP50-95", "mAP50", "mask_mAP50-95", "mask_mAP50") if key in scores["int8"]]
        print("  ".join(f"{key} int8 {scores['int8'][key]:.3f} (float32 {scores['float32'][key]:.3f})"
                        for key in keys) + f" on {data} val")  # fmt: skip

    # --- model -------------------------------------------------------------------------------------------

    @property
    def imgsz(self) -> int:
        """The model's input size: its config's (an exported file's own), else DEFAULT_IMGSZ."""
        return self.config.get("imgsz", DEFAULT_IMGSZ)

    @property
    def device(self) -> torch.device:
        if self.exported is not None:
            return self.exported.target
        return next(self.model.parameters()).device

    def to(self, device: str | int | torch.device) -> RTDETR:
        if self.exported is not None:
            self.exported = self.exported.reopen(select_device(device), self.exported.half)
        else:
            self.model.to(select_device(device))
        self._predictor = None
        return self

    def info(self, verbose: bool = True, imgsz: int | None = None) -> tuple[int, int, float]:
        """(parameters, trainable parameters, GFLOPs at imgsz); printed when verbose."""
        imgsz = imgsz or self.imgsz
        detector = self._torch_model("count its parameters")
        params = sum(p.numel() for p in detector.parameters())
        trainable = sum(p.numel() for p in detector.parameters() if p.requires_grad)
        with torch.device("meta"):  # count FLOPs without computing anything
            shadow = build_model(self.config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            shadow(torch.zeros(1, 3, imgsz, imgsz, device="meta"))
        gflops = counter.get_total_flops() / 1e9
        if verbose:
            print(
                f"RT-DETR summary: {params:,} parameters, {trainable:,} gradients, "
                f"{gflops:.1f} GFLOPs at {imgsz}x{imgsz}"
            )
        return params, trainable, gflops

    def save(self, filename: str | Path) -> Path:
        """Write our safetensors weights (model config and names inside)."""
        return weights.save_weights(
            self._torch_model("save weights").state_dict(), {**self.config, "names": self.names}, filename
        )


def _open_exported(source: str | Path, device: torch.device | None) -> ExportedModel | None:
    """The exported model at `source` (an .onnx file; an OpenVINO folder or its .xml), or None for other sources."""
    for runtime in (OnnxModel, OpenVinoModel):
        if runtime.reads(source):
            return runtime(source, device)
    return None
