"""`RTDETR`, the Python entry point, shaped like ultralytics' model class.

from detr_toolkit import RTDETR
model = RTDETR("rtdetr-l.pt")              # ultralytics checkpoint, our .safetensors, or a config YAML
results = model.predict("bus.jpg")         # list of Results
results[0].show()
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from . import weights
from .config import class_names
from .engine.device import select_device
from .engine.predictor import Predictor, inference_dtype
from .engine.saver import PredictionSaver
from .errors import ConfigError, DetrToolkitError
from .nn import Detector, build_model
from .results import Results
from .settings import ExportArgs, PredictArgs, TrainArgs, ValArgs

DEFAULT_IMGSZ = 640  # for a model config without imgsz


class RTDETR:
    """A detector and its class names, with predict / info / save.

    Attributes:
        model: the `Detector` (torch module).
        names: {class index: name}.
        config: the model config (the YAML that rebuilds `model`), without names.
        ckpt_path: where the model came from.
    """

    def __init__(self, model: str | Path | dict = "rtdetr-l.pt", device: str | int | torch.device | None = None):
        config, state = weights.load(model)
        source = "model config" if isinstance(model, dict) else str(model)
        names = config.pop("names", None)
        self.config = config
        try:
            self.model: Detector = build_model(config)
            self.names: dict[int, str] = class_names(names, config["nc"], "model config")
        except DetrToolkitError as error:  # a bad or oversized config: name the file it came from
            raise type(error)(f"{source}: {error}") from None
        self.pretrained = state is not None  # False: random weights from a config
        if state is not None:
            weights.load_state(self.model, state, source)
        self.ckpt_path = str(model) if not isinstance(model, dict) else None
        self.model.eval().to(select_device(device))
        self._predictor: Predictor | None = None

    # --- predict -----------------------------------------------------------------------------------------

    def predict(
        self, source: Any = None, *, stream: bool = False, **settings: Any
    ) -> list[Results] | Iterator[Results]:
        """Detect objects in `source` (path, directory, glob, URL, list, PIL, numpy BGR, tensor, video).

        Returns a list of Results, or a generator of them with `stream=True` (for long videos). Settings (see
        `settings.PredictArgs`): conf, imgsz, max_det, classes, batch, device, half, save, save_txt, save_conf,
        save_crop, project, name, verbose. Saved outputs go to `project/name` (incremented: predict-2, ...).
        """
        args = PredictArgs.create(**settings)
        args.imgsz = self.model.check_input_size(args.imgsz or self.config.get("imgsz", DEFAULT_IMGSZ))
        if args.classes is not None and not set(args.classes) <= set(self.names):
            raise ConfigError(f"classes={args.classes}: the model has classes 0..{len(self.names) - 1}")
        predictor = self._get_predictor(args.device, args.half)
        saving = args.save or args.save_txt or args.save_crop
        saver = PredictionSaver(args.project, args.name, args.save, args.save_txt, args.save_conf, args.save_crop)
        generator = self._predict_stream(predictor, source, args, saver if saving else None)
        return generator if stream else list(generator)

    __call__ = predict

    def _get_predictor(self, device: Any, half: bool) -> Predictor:
        """The cached predictor, rebuilt when the device or precision asked for changes, or the model's weights
        (`model.model.load_state_dict(...)`, training in between)."""
        target = select_device(device) if device is not None else self.device
        if self._predictor is None or not self._predictor.serves(self.model, target, inference_dtype(target, half)):
            self._predictor = Predictor(self.model, self.names, target, half)
        return self._predictor

    @staticmethod
    def _predict_stream(
        predictor: Predictor, source: Any, args: PredictArgs, saver: PredictionSaver | None
    ) -> Iterator[Results]:
        verbose = args.verbose
        try:
            for frame, result, (height, width) in predictor.stream(source, args):
                if saver:
                    saver.add(frame, result)
                if verbose:
                    where = Path(frame.path).name + ("" if frame.video_frame is None else f" frame {frame.video_frame}")
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

        args = TrainArgs.from_sources(cfg, {"imgsz": self.config.get("imgsz", DEFAULT_IMGSZ)}, **settings)
        if args.resume:
            save_dir = Trainer.resume(args)
        else:
            state = self.model.state_dict() if self.pretrained else None  # else the trainer initialises with its seed
            save_dir = Trainer({**self.config, "names": self.names}, state, args).train()
        weights_dir = save_dir / "weights"
        trained = weights_dir / "best.safetensors" if (weights_dir / "best.safetensors").is_file() else None
        self.__init__(trained or weights_dir / "last.safetensors", device=args.device)
        return save_dir

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
        imgsz = self.model.check_input_size(args.imgsz or self.config.get("imgsz", DEFAULT_IMGSZ))
        dataset = DetectionDataset(annotations, names, imgsz)
        target = select_device(args.device) if args.device is not None else self.device
        dtype = inference_dtype(target, args.half)
        stats, per_class = evaluate(self.model.to(target), dataset, args.batch, target, dtype=dtype)
        if args.verbose:
            print(f"{args.data} ({args.split}, {len(dataset)} images): " + "  ".join(
                f"{k} {stats[k]:.3f}" for k in ("mAP50-95", "mAP50", "mAP75", "AR100")))  # fmt: skip
        return {"metrics": stats, "per_class": {names[c]: ap for c, ap in per_class.items()}}

    # --- export ------------------------------------------------------------------------------------------

    def export(self, **settings: Any) -> str:
        """Write the model for deployment; -> the file's path (default: next to the checkpoint, `.onnx`).

        Settings (see `settings.ExportArgs`): format, imgsz, batch, dynamic, opset, file. ONNX: input `images`
        (batch, 3, imgsz, imgsz) RGB 0..1, output `output0` (batch, queries, 4 + classes): cx cy w h in 0..1 and
        class scores, as ultralytics exports RT-DETR. dynamic: any batch size.
        """
        from .engine.exporter import export_onnx

        args = ExportArgs.create(**settings)
        source = Path(self.ckpt_path) if self.ckpt_path else Path("model")
        file = Path(args.file) if args.file else source.with_suffix(f".{args.format}")
        metadata = {
            "description": f"detr-toolkit {source.stem}", "task": "detect", "stride": str(self.model.stride),
            "names": str(self.names), "config": yaml.safe_dump(self.config, sort_keys=False),
        }  # fmt: skip
        imgsz = args.imgsz or self.config.get("imgsz", DEFAULT_IMGSZ)
        return str(export_onnx(self.model, metadata, file, imgsz, args.batch, args.dynamic, args.opset))

    # --- model -------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | int | torch.device) -> RTDETR:
        self.model.to(select_device(device))
        self._predictor = None
        return self

    def info(self, verbose: bool = True, imgsz: int | None = None) -> tuple[int, int, float]:
        """(parameters, trainable parameters, GFLOPs at imgsz); printed when verbose."""
        imgsz = imgsz or self.config.get("imgsz", DEFAULT_IMGSZ)
        params = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        with torch.device("meta"):  # count FLOPs without computing anything
            shadow = build_model(self.config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            shadow(torch.zeros(1, 3, imgsz, imgsz, device="meta"))
        gflops = counter.get_total_flops() / 1e9
        if verbose:
            print(
                f"RT-DETR summary: {params:,} parameters, {trainable:,} gradients, {gflops:.1f} GFLOPs at {imgsz}x{imgsz}"
            )
        return params, trainable, gflops

    def save(self, filename: str | Path) -> Path:
        """Write our safetensors weights (model config and names inside)."""
        return weights.save_weights(self.model.state_dict(), {**self.config, "names": self.names}, filename)
