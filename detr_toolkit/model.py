"""`RTDETR`, the Python entry point, shaped like ultralytics' model class.

from detr_toolkit import RTDETR
model = RTDETR("rtdetr-l.pt")              # ultralytics checkpoint, our .safetensors, or a config YAML
results = model.predict("bus.jpg")         # list of Results
results[0].show()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from . import weights
from .engine.device import select_device
from .engine.predictor import PredictOptions, Predictor, inference_dtype
from .engine.saver import PredictionSaver
from .errors import ConfigError, DetrToolkitError
from .nn import Detector, build_model
from .results import Results


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
        self.names: dict[int, str] = config.pop("names", None) or {i: str(i) for i in range(config.get("nc", 0))}
        self.config = config
        try:
            self.model: Detector = build_model(config)
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
        self,
        source: Any = None,
        *,
        conf: float = 0.25,
        imgsz: int | None = None,
        max_det: int = 300,
        classes: Sequence[int] | None = None,
        device: str | int | torch.device | None = None,
        batch: int = 1,
        half: bool = False,
        stream: bool = False,
        save: bool = False,
        save_txt: bool = False,
        save_conf: bool = False,
        project: str | Path = "runs",
        name: str = "predict",
        verbose: bool = True,
    ) -> list[Results] | Iterator[Results]:
        """Detect objects in `source` (path, directory, glob, URL, list, PIL, numpy BGR, tensor, video).

        Returns a list of Results, or a generator of them with `stream=True` (for long videos).
        `save`/`save_txt` write plotted images / YOLO labels to `project/name` (incremented as ultralytics does: predict-2, ...).
        """
        options = PredictOptions(conf, imgsz or self.config.get("imgsz", 640), max_det, classes, batch)
        if options.classes is not None and not set(options.classes) <= set(self.names):
            raise ConfigError(f"classes={options.classes}: the model has classes 0..{len(self.names) - 1}")
        predictor = self._get_predictor(device, half)
        saver = PredictionSaver(project, name, save, save_txt, save_conf) if save or save_txt else None
        generator = self._predict_stream(predictor, source, options, saver, verbose)
        return generator if stream else list(generator)

    __call__ = predict

    def _get_predictor(self, device: Any, half: bool) -> Predictor:
        """The cached predictor, rebuilt when the device or precision asked for changes."""
        target = select_device(device) if device is not None else self.device
        dtype = inference_dtype(target, half)
        if self._predictor is None or (self._predictor.device, self._predictor.dtype) != (target, dtype):
            self._predictor = Predictor(self.model, self.names, target, half)
        return self._predictor

    @staticmethod
    def _predict_stream(
        predictor: Predictor, source: Any, options: PredictOptions, saver: PredictionSaver | None, verbose: bool
    ) -> Iterator[Results]:
        try:
            for frame, result, (height, width) in predictor.stream(source, options):
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

    def train(self, cfg: str | Path | None = None, **kwargs: Any) -> Path:
        """Train on `data=` (see `engine.train_args.TrainArgs` for every setting); returns the run folder.

        The model then holds the best weights (EMA, by val mAP50-95). A dataset with another class count
        re-initialises the class heads only (fine-tuning).
        """
        from .engine.train_args import TrainArgs
        from .engine.trainer import Trainer

        args = TrainArgs.create(cfg, {"imgsz": self.config.get("imgsz", 640)}, **kwargs)
        state = self.model.state_dict() if self.pretrained else None  # else the trainer initialises with its seed
        trainer = Trainer({**self.config, "names": self.names}, state, args)
        save_dir = trainer.train()
        trained = save_dir / "weights" / ("best.safetensors" if args.val else "last.safetensors")
        self.__init__(trained, device=trainer.device)
        return save_dir

    def val(self, data: str | Path, split: str = "val", batch: int = 8, imgsz: int | None = None,
            device: str | int | torch.device | None = None, verbose: bool = True, half: bool = False,
            **data_kwargs: Any) -> dict[str, Any]:  # fmt: skip
        """COCO metrics on a dataset split -> {"metrics": {mAP50-95, mAP50, ...}, "per_class": {name: AP50-95}}.

        half: compute as `predict(half=True)` does (float16 on CUDA, bfloat16 on CPUs with native bf16).
        """
        from .data.dataset import DetectionDataset
        from .data.splits import load_split
        from .engine.validator import evaluate

        annotations, names = load_split(data, split, **data_kwargs)
        if len(names) != len(self.names):
            raise ConfigError(f"{data}: {len(names)} classes, but the model has {len(self.names)}")
        dataset = DetectionDataset(annotations, names, imgsz or self.config.get("imgsz", 640))
        target = select_device(device) if device is not None else self.device
        stats, per_class = evaluate(self.model.to(target), dataset, batch, target, dtype=inference_dtype(target, half))
        if verbose:
            print(f"{data} ({split}, {len(dataset)} images): " + "  ".join(
                f"{k} {stats[k]:.3f}" for k in ("mAP50-95", "mAP50", "mAP75", "AR100")))  # fmt: skip
        return {"metrics": stats, "per_class": {names[c]: ap for c, ap in per_class.items()}}

    # --- export ------------------------------------------------------------------------------------------

    def export(self, format: str = "onnx", imgsz: int | None = None, batch: int = 1, dynamic: bool = False,
               opset: int | None = None, file: str | Path | None = None) -> str:  # fmt: skip
        """Write the model for deployment; -> the file's path (default: next to the checkpoint, `.onnx`).

        ONNX: input `images` (batch, 3, imgsz, imgsz) RGB 0..1, output `output0` (batch, queries, 4 + classes):
        cx cy w h in 0..1 and class scores, as ultralytics exports RT-DETR. dynamic: any batch size.
        """
        from .engine.exporter import DEFAULT_OPSET, FORMATS, export_onnx

        if format not in FORMATS:
            raise ConfigError(f"format={format!r}: can export to {', '.join(FORMATS)}")
        source = Path(self.ckpt_path) if self.ckpt_path else Path("model")
        file = Path(file) if file else source.with_suffix(f".{format}")
        metadata = {
            "description": f"detr-toolkit {source.stem}", "task": "detect", "stride": str(self.model.stride),
            "names": str(self.names), "config": yaml.safe_dump(self.config, sort_keys=False),
        }  # fmt: skip
        imgsz = imgsz or self.config.get("imgsz", 640)
        return str(export_onnx(self.model, metadata, file, imgsz, batch, dynamic, opset or DEFAULT_OPSET))

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
        imgsz = imgsz or self.config.get("imgsz", 640)
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
