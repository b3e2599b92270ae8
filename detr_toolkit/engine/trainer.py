"""Training: data -> augment -> model -> loss -> AdamW step -> EMA, one epoch after another, each ending with
validation, a line of results.csv and atomically written checkpoints.

    runs/train/NAME/
        args.yaml                     the training arguments
        weights/last.pt               everything to resume (model, EMA, optimizer, schedule, epoch), weights-only
        weights/last.safetensors      the EMA model, loadable by RTDETR() for predict
        weights/best.safetensors      the EMA model of the best epoch (mAP50-95)
        results.csv, results.png      losses and metrics per epoch
        train_batch0.jpg              the first (augmented) training batch with its labels
        pr_curve.png, confusion_matrix.png    of the best weights on the val split

`time=` (hours) caps the wall time instead of `epochs`: after each epoch the epochs that still fit are estimated
from the mean epoch so far (the first one, with its start-up costs, left out once there are others; validation
included, and the final scoring of the best weights set aside), and the
learning-rate schedule, warm-up and the mosaic/mixup phase are fitted to that count, as ultralytics does.

Small datasets get settings that fit them unless given (each change printed): the warm-up ends within the first
tenth of the run, and a model with fewer queries than the most objects in a training image gets more.

Runs are reproducible: every epoch reseeds from (seed, epoch), so a run resumed from last.pt continues
exactly as the uninterrupted run would have (see the README for what `seed=` guarantees).

Numerical trouble is caught, never trained on: a batch whose loss is not finite is left out (its window's other
batches still count) and a step whose gradients are not finite is not taken; under DDP the ranks agree on every
such skip. Skips are counted per epoch (results.csv `skipped`). A loss that stays non-finite, or weights that
become non-finite, stop the run with a message; a model whose validation outputs are not finite never becomes
best.safetensors.

Under `torchrun --nproc_per_node N` training is data-parallel (DistributedDataParallel, gloo on CPU, nccl on
CUDA): each process takes batch / N images of every step through a DistributedSampler; each predicts every Nth
val image and rank 0 scores them all (the numbers of one process); rank 0 alone logs and saves, and at the end all
ranks check that their weights are identical.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..data.dataset import Collate, DetectionDataset, worker_start
from ..data.splits import load_split
from ..errors import CheckpointError, ConfigError, DatasetError, ModelOutputError
from ..files import (
    check_writable,
    first_missing,
    increment_dir,
    make_dirs,
    remove_if_unused,
    remove_partial_files,
    run_lock,
    write_file,
)
from ..loggers import logger_callbacks
from ..loss import build_criterion
from ..nn import Detector, build_model
from ..settings import TrainArgs
from ..weights import load_pretrained_backbone, load_state, load_weights, save_weights
from .callbacks import Callbacks, default_callbacks
from .checkpoint import find_checkpoint, read_checkpoint, resumed_args, write_checkpoint
from .coco_metrics import coco_metrics
from .confusion import confusion_matrix
from .cpu_memory import keep_freed_memory
from .device import select_device
from .ema import ModelEMA
from .plots import plot_batch, plot_confusion_matrix, plot_pr_curves, plot_results
from .predictor import TorchInference
from .progress import LogProgress, on_terminal
from .threads import ThreadTuner, describe_threads, set_threads
from .validator import predict_dataset

LOSS_KEYS = ("loss_class", "loss_bbox", "loss_giou")
MASK_LOSS_KEYS = ("loss_mask", "loss_dice")  # a segmentation model's too
VAL_KEYS = ("mAP50-95", "mAP50", "mAP75")  # of each epoch's validation, in results.csv
MASK_VAL_KEYS = ("mask_mAP50-95", "mask_mAP50", "mask_mAP75")
# Consecutive batches with a non-finite loss after which a run is taken to have diverged (or a whole epoch's, if
# an epoch has fewer batches).
NONFINITE_STREAK = 20
# Share of a run's optimizer steps the warm-up may take unless warmup_iters is given.
WARMUP_SHARE = 0.1
# Queries per object of the most crowded training image that a model is given when it has fewer (a mosaic can
# gather about twice an image's objects).
QUERIES_PER_OBJECT, QUERIES_PER_OBJECT_MOSAIC = 1.5, 2.0
# time=: the first epoch's steps timed (after its first, which warms up) before the run is planned from them.
PLAN_AFTER_STEPS = 5
# time=: a validation, before one is timed, is guessed at this share of the time training takes per image (a
# forward pass without the backward, plus scoring).
VAL_SHARE_OF_TRAINING = 0.5


def adapt_to_classes(config: dict, state: dict[str, torch.Tensor] | None, names: dict[int, str],
                     trained_names: dict[int, str] | None = None) -> tuple[Detector, list[str]]:  # fmt: skip
    """The model to train for the classes `names`: `state` (trained for `trained_names`) loaded, all but the
    tensors of one row per class (the class heads) when the classes differ: fine-tuning, also to as many other
    classes; fresh weights without a state.

    Returns the model and the names of the tensors left at their initial values.
    """
    model = build_model({**config, "nc": len(names)})
    if state is None:
        return model, []
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if trained_names is not None and trained_names != names and len(trained_names) == len(names):
        one_more_class = build_model({**config, "nc": len(names) + 1}).state_dict()
        fitting = {k: v for k, v in fitting.items() if one_more_class[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return model, sorted(set(own) - set(fitting))


def enough_queries(config: dict, most_objects: int, mosaic: bool) -> tuple[dict, str | None]:
    """`config` with at least QUERIES_PER_OBJECT(_MOSAIC) x `most_objects` decoder queries (rounded up to tens),
    and the reason, when it had fewer; else (config, None)."""
    decoder = config.get("decoder", {})
    queries = decoder.get("num_queries", 300)
    per_object = QUERIES_PER_OBJECT_MOSAIC if mosaic else QUERIES_PER_OBJECT
    needed = math.ceil(most_objects * per_object / 10) * 10
    if queries >= needed:
        return config, None
    reason = (f"num_queries {queries} -> {needed}: training images hold up to {most_objects} objects"
              + (" (and a mosaic gathers more)" if mosaic else ""))  # fmt: skip
    return {**config, "decoder": {**decoder, "num_queries": needed}}, reason


def parameter_groups(model: Detector, lr: float, lr_backbone: float, weight_decay: float) -> list[dict]:
    """AdamW groups, each named by its learning rate's role ("backbone" or "head"): the backbone at its own rate;
    no weight decay on norms, biases and embeddings (1-D tensors)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("backbone."), param.ndim <= 1), []).append(param)
    return [
        {"params": params, "name": "backbone" if backbone else "head", "lr": lr_backbone if backbone else lr,
         "weight_decay": 0.0 if flat else weight_decay}
        for (backbone, flat), params in groups.items()
    ]  # fmt: skip


def lr_factor(step: int, total: int, warmup: int, schedule: str, final: float) -> float:
    """Multiplier of the base learning rates at optimizer step `step` of `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if schedule == "cosine":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1 - (1 - final) * progress
    return 1.0


def setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, select_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), world, torch.device(f"cuda:{local_rank}" if cuda else "cpu")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Meanwhile SIGTERM (`kill`, a scheduler's stop) raises SystemExit in the main thread: the run cleans up as
    after Ctrl-C (a run folder without a checkpoint goes) instead of dying where it stands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def earlier_results(results_csv: Path, epochs: int) -> list[dict[str, Any]]:
    """The rows of the first `epochs` epochs in a run's results.csv (none where it is missing or unreadable)."""
    try:
        with results_csv.open(newline="") as f:
            return [row for row in csv.DictReader(f) if row.get("epoch", "").isdigit() and int(row["epoch"]) <= epochs]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


class Trainer:
    """Trains a model (its `config` with class `names`, from `state` or fresh) on `args.data`; `train()` returns the
    run folder. `Trainer.resume(args)` continues a run from its weights/last.pt."""

    def __init__(
        self,
        config: dict,
        state: dict[str, torch.Tensor] | None,
        args: TrainArgs,
        checkpoint: dict[str, Any] | None = None,
        save_dir: Path | None = None,
        callbacks: Callbacks | None = None,
    ):
        """`checkpoint` and `save_dir`: a run to resume (see `resume`); `callbacks`: see engine/callbacks.py."""
        self.created = time.monotonic()  # time= counts from here: loading data and building the model included
        self.args = args
        self.rank, self.world, self.device = setup_distributed(args.device)
        self.main = self.rank == 0  # the process that validates, logs and saves
        self.callbacks = callbacks or default_callbacks()
        for event, functions in logger_callbacks(args.loggers, "loggers" in args.given).items():
            self.callbacks = {**self.callbacks, event: [*self.callbacks[event], *functions]}
        self.epoch, self.batch_index, self.loss_items, self.metrics = 0, 0, None, {}  # what callbacks read
        self.run_callbacks("on_pretrain_routine_start")
        self._setup_machine(save_dir is None)
        most_objects = self._setup_data()
        adapted = self._setup_model(config, state, checkpoint, save_dir, most_objects)
        adapted += self._setup_optimisation()
        for reason in adapted if args.verbose and self.main else ():
            print(f"adapted to the data: {reason} (give the setting to choose)")
        self._setup_run_folder(checkpoint, save_dir)
        self.run_callbacks("on_pretrain_routine_end")

    def _setup_machine(self, new_run: bool) -> None:
        """Threads (printed), their tuners, the run folder's writability (before anything slow), the allocator."""
        args = self.args
        self.progress_bar = args.verbose and on_terminal()
        set_threads(args.threads)
        if args.verbose and self.main and self.device.type == "cpu":
            print(describe_threads())
        self.step_threads, self.val_threads = ThreadTuner(), ThreadTuner()
        if self.main and new_run:
            check_writable(Path(args.project) / args.name / "args.yaml")  # before loading data and models
        if self.device.type == "cpu":
            keep_freed_memory()

    def _setup_data(self) -> int:
        """The train and val datasets and the class names; -> the most objects in a training image."""
        args = self.args
        train, self.names = load_split(args.data, "train", **args.dataset)
        self.train_set = DetectionDataset(train, self.names, args.imgsz, args.augment, args.mosaic, args.mixup)
        self.val_set = None
        if args.val:
            val, _ = load_split(args.data, "val", **args.dataset)
            self.val_set = DetectionDataset(val, self.names, args.imgsz)
        return int(self.train_set.annotations.boxes_per_image().max(initial=0))

    def _setup_model(
        self,
        config: dict,
        state: dict[str, torch.Tensor] | None,
        checkpoint: dict[str, Any] | None,
        save_dir: Path | None,
        most_objects: int,
    ) -> list[str]:
        """The model (fitted to the data's classes; a resumed one exactly the checkpoint's) on its device, its
        criterion; -> what was fitted to the data, and why."""
        args = self.args
        trained_names = config.get("names") if state is not None else None
        config = {k: v for k, v in config.items() if k != "names"}
        adapted = []
        if checkpoint is None:
            config, reason = enough_queries(config, most_objects, args.mosaic > 0)
            adapted += [reason] if reason else []
        torch.manual_seed(args.seed)  # a model made here starts from the same weights in every run
        self.model, reset = adapt_to_classes(config, state if checkpoint is None else None, self.names, trained_names)
        if checkpoint is not None:  # a resumed model is the checkpoint's, exactly
            load_state(self.model, checkpoint["model"], f"{save_dir}/weights/last.pt")
        elif state is None:  # a new model: its backbone's pretrained weights, where the config names them
            load_pretrained_backbone(self.model, config)
        self.config = {**config, "nc": len(self.names), "imgsz": args.imgsz}
        if reset and args.verbose and self.main:
            print(
                f"fine-tuning to {len(self.names)} classes ({', '.join(self.names.values())}): re-initialised "
                f"{', '.join(reset)}"
            )
        if self.model.mask_head is not None and not self.train_set.with_masks:
            raise DatasetError(f"{args.data}: a segmentation model (mask_head) trains on segmentation labels (YOLO-seg "
                               "polygons, COCO segmentation); this dataset has boxes only")  # fmt: skip
        self.model.check_input_size(args.imgsz, batch=args.batch)
        for size in args.multi_scale:
            self.model.check_input_size(size, "multi_scale", args.batch)
        self.model.to(self.device)
        if self.world > 1 and self.device.type == "cuda":  # batch statistics of the global batch (official: sync_bn)
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # (CPU processes keep their own)
        self.train_model = DistributedDataParallel(self.model) if self.world > 1 else self.model
        self.criterion = build_criterion(config.get("loss"), len(self.names))  # the family's, named in its config
        self.loss_keys = LOSS_KEYS + (MASK_LOSS_KEYS if self.model.mask_head is not None else ())
        if args.o2m:
            self._add_one_to_many(most_objects)
        return adapted

    def _setup_optimisation(self) -> list[str]:
        """AdamW, EMA, mixed precision, the epoch plan and the run's counters; -> the warm-up fitted to the run."""
        args = self.args
        self.optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters (CPU and CUDA)
            parameter_groups(self.model, args.lr, args.lr_backbone, args.weight_decay), lr=args.lr, fused=True
        )
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.ema = ModelEMA(self.model, args.ema_decay, args.ema_tau)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.best_fitness, self.best_epoch, self.skipped, self.epochs_done = 0, -1.0, -1, 0, 0
        self.steps_per_epoch = math.ceil(len(self._loader(0)) / args.accumulate)
        self.epochs = args.epochs  # planned; time= re-fits it after every epoch
        self.train_seconds = 0.0  # spent training so far (over resumes), for time=
        self.results: list[dict[str, Any]] = []  # results.csv's rows, one per epoch done
        self.val_seconds = 0.0  # the last validation's
        self.mixing = args.mosaic > 0 or args.mixup > 0  # until the final, plain epochs
        warmup = self._warmup()
        if warmup == args.warmup_iters:
            return []
        steps = self.steps_per_epoch * self.epochs
        share = f"at most {WARMUP_SHARE:.0%} of the run's {steps} optimizer steps"
        return [f"warmup_iters {args.warmup_iters} -> {warmup}: {share}"]

    def _setup_run_folder(self, checkpoint: dict[str, Any] | None, save_dir: Path | None) -> None:
        """The run folder (a new one, or the resumed run's, with its state restored), the same on every rank."""
        args = self.args
        # Only a run folder this run made may be removed when it fails (not a resumed one, nor one reused by exist_ok).
        self.made_run_dir = checkpoint is None and not (args.exist_ok and (Path(args.project) / args.name).exists())
        self.made_from = first_missing(Path(args.project) / args.name) if self.made_run_dir else None
        if checkpoint is not None:
            self._restore(checkpoint, save_dir)
        if self.main:
            self.save_dir = save_dir or increment_dir(args.project, args.name, exist_ok=args.exist_ok)
        if self.world > 1:  # every rank learns rank 0's run folder
            shared = [str(getattr(self, "save_dir", ""))]
            dist.broadcast_object_list(shared, src=0)
            self.save_dir = Path(shared[0])

    @property
    def last(self) -> Path:
        """The checkpoint a resume continues from (ultralytics' `trainer.last`)."""
        return self.save_dir / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        """The best epoch's weights (ultralytics' `trainer.best`; ours are safetensors)."""
        return self.save_dir / "weights" / "best.safetensors"

    def run_callbacks(self, event: str) -> None:
        """Call `event`'s callbacks with this trainer (rank 0 only; see engine/callbacks.py)."""
        for callback in self.callbacks[event] if self.main else ():
            callback(self)

    def _add_one_to_many(self, most_objects: int) -> None:
        """Hybrid matching: o2m_queries more queries in training (default o2m x the most objects in an image, at
        least the model's queries), matched to o2m copies of the objects."""
        decoder, args = self.model.decoder, self.args
        if not hasattr(decoder, "one_to_many_queries"):
            raise ConfigError(f"o2m={args.o2m}: the {type(decoder).__name__} has no one-to-many branch")
        decoder.one_to_many_queries = args.o2m_queries or max(args.o2m * most_objects, decoder.num_queries)
        self.criterion.one_to_many_copies, self.criterion.one_to_many_weight = args.o2m, args.o2m_weight

    @classmethod
    def resume(cls, args: TrainArgs, callbacks: Callbacks | None = None) -> Path:
        """Continue the run whose weights/last.pt `args.resume` names (True: the newest under `args.project`), in
        the folder that file is in now, with the settings it ran with (RESUMABLE ones changed as `args` says)."""
        path = find_checkpoint(args.resume, args.project)
        checkpoint = read_checkpoint(path)
        resumed = resumed_args(checkpoint["train_args"], args, path)
        # What the run was given stays given (not fitted to the data); a checkpoint from before "given" was
        # stored counts every setting as given.
        resumed.given = frozenset(checkpoint.get("given", checkpoint["train_args"])) | args.given
        # a time= run is over when its time is spent, or when it ended its plan and was given no more time
        time_given = resumed.time or 0
        ended_plan = checkpoint["epoch"] + 1 >= checkpoint.get("planned_epochs", resumed.epochs)
        more_time = time_given > (checkpoint["train_args"].get("time") or 0)
        spent = checkpoint.get("train_seconds", 0.0) >= time_given * 3600
        if time_given and (spent or ended_plan and not more_time):
            raise ConfigError(f"{path}: the run has used its time={resumed.time:g} hours; give time= more to continue")
        if not resumed.time and resumed.epochs <= checkpoint["epoch"] + 1:
            raise ConfigError(
                f"{path}: the run has trained all of its {resumed.epochs} epochs; give epochs= more to continue"
            )
        config = {**checkpoint["config"], "names": checkpoint["names"]}
        return cls(config, checkpoint["model"], resumed, checkpoint, path.parent.parent, callbacks).train()

    # --- checkpoints ---------------------------------------------------------------------------------------

    def _restore(self, checkpoint: dict[str, Any], save_dir: Path | None) -> None:
        source = f"{save_dir}/weights/last.pt"
        load_state(self.ema.module, checkpoint["ema"], source)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scaler.load_state_dict(checkpoint["scaler"])
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as error:
            raise CheckpointError(f"{source}: its optimizer state does not fit the model ({error})") from None
        self.ema.updates = checkpoint["ema_updates"]
        self.start_epoch = checkpoint["epoch"] + 1
        self.best_fitness = checkpoint.get("best_fitness", -1.0)
        self.best_epoch = checkpoint.get("best_epoch", -1)
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        # its results.csv rows (a checkpoint from before they were stored: the file's rows up to its epoch)
        self.results = (
            list(checkpoint["results"])
            if "results" in checkpoint
            else earlier_results(save_dir / "results.csv", checkpoint["epoch"] + 1)
        )
        if self.args.time:  # else the (perhaps changed) epochs= holds
            self.epochs = max(int(checkpoint.get("planned_epochs", self.epochs)), self.start_epoch + 1)
        self.mixing = bool(checkpoint.get("mixing", self.mixing))
        if self.args.verbose and self.main:
            print(f"resuming from epoch {self.start_epoch + 1}")

    def _save(self, epoch: int, fitness: float | None) -> None:
        """last.pt and last.safetensors; best.safetensors when `fitness` (val mAP50-95) is the best yet."""
        model_config = {**self.config, "names": self.names}
        save_weights(self.ema.module.state_dict(), model_config, self.save_dir / "weights" / "last.safetensors")
        if fitness is not None and fitness > self.best_fitness:
            self.best_fitness, self.best_epoch = fitness, epoch
            save_weights(self.ema.module.state_dict(), model_config, self.best)
        write_checkpoint(self.last, {
            "epoch": epoch, "best_fitness": self.best_fitness, "best_epoch": self.best_epoch,
            "model": self.model.state_dict(), "ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "config": self.config,
            "names": self.names, "train_args": self.args.to_dict(), "save_dir": str(self.save_dir),
            "train_seconds": self.train_seconds, "planned_epochs": self.epochs, "mixing": self.mixing,
            "given": sorted(self.args.given), "results": self.results,
        })  # fmt: skip

    # --- loop ----------------------------------------------------------------------------------------------

    def _loader(self, epoch: int) -> DataLoader:
        """This epoch's batches (of this rank's share under DDP), in an order fixed by (seed, epoch)."""
        batch, sampler, generator = self.args.batch, None, torch.Generator().manual_seed(self.args.seed + epoch)
        drop_last = len(self.train_set) > batch
        if self.world > 1:
            batch = max(batch // self.world, 1)
            sampler = DistributedSampler(self.train_set, self.world, self.rank, shuffle=True, seed=self.args.seed,
                                         drop_last=drop_last)  # fmt: skip
            sampler.set_epoch(epoch)
        return DataLoader(
            self.train_set,
            batch_size=batch,
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.args.workers,
            collate_fn=Collate(self.args.multi_scale),
            drop_last=drop_last,
            worker_init_fn=worker_start,
        )

    def _warmup(self, epochs: int | None = None) -> int:
        """Warm-up steps: warmup_iters, at most WARMUP_SHARE of the steps of `epochs` (default: those planned)
        unless given."""
        if "warmup_iters" in self.args.given:
            return self.args.warmup_iters
        steps = self.steps_per_epoch * (epochs or self.epochs)
        return min(self.args.warmup_iters, max(1, round(WARMUP_SHARE * steps)))

    def _set_lr(self, step: int, total: int) -> None:
        a = self.args
        factor = lr_factor(step, total, self._warmup(), a.schedule, a.lrf)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _agree(self, ok: bool) -> bool:
        """True when `ok` holds on every rank: a decision all ranks take together (one rank alone skipping a
        step while the others all-reduce would hang the job)."""
        if self.world == 1:
            return ok
        flag = torch.tensor([float(ok)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _step(self, step: int, total_steps: int) -> bool:
        """One optimizer step on the accumulated gradients, unless they are not finite; -> whether it was taken."""
        self._set_lr(step, total_steps)
        self.scaler.unscale_(self.optimizer)
        # The norm is the same on every rank (DDP averaged the gradients), so every rank decides alike.
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_grad or math.inf)
        finite = bool(torch.isfinite(norm))
        if finite or self.scaler.is_enabled():  # the fp16 scaler skips a non-finite step itself, and adapts
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self.ema.update(self.model)
        return finite

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set -> mean losses, throughput, skipped batches and learning rates; under
        time=, cut short after the step that passes the deadline (see `_deadline`)."""
        from tqdm import tqdm

        args = self.args
        torch.manual_seed(args.seed + epoch)
        random.seed(args.seed + epoch)
        self.model.train()
        self.train_set.mixing = self.mixing
        loader = self._loader(epoch)
        batches, accumulated, skipped, streak = len(loader), 0, 0, 0
        sums = dict.fromkeys((*self.loss_keys, "loss"), 0.0)
        seen, start = 0, time.perf_counter()
        # The bar draws on a terminal; logs and captured output get a line every 30 s and one per epoch instead.
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not (self.progress_bar and self.main))
        log = LogProgress(f"epoch {epoch + 1}", batches, enabled=args.verbose and self.main and not self.progress_bar)
        plan_after = min(PLAN_AFTER_STEPS, batches - 1) if args.time and epoch == self.start_epoch else -1
        step = epoch * self.steps_per_epoch
        if self.device.type == "cpu":
            self.step_threads.start()
        for i, (images, targets) in enumerate(bar):
            if epoch == 0 and i == 0 and self.main and args.plots:  # what the model sees, augmentation included
                plot_batch(images, targets, self.names, self.save_dir / "train_batch0.jpg")
            window_start = i - i % args.accumulate  # the accumulation window of this batch, shorter at the end
            window = min(args.accumulate, batches - window_start)
            losses = self._forward_backward(images, targets, window)
            self.batch_index, self.loss_items = i, losses
            if losses is not None:
                accumulated += 1
                streak = 0
                seen += len(images)
                for key, value in losses.items():
                    sums[key] += value * len(images)
            else:  # left out; the window's other batches still count
                skipped, streak = skipped + 1, streak + 1
                if streak >= min(NONFINITE_STREAK, batches):
                    raise ModelOutputError(
                        f"training diverged: the loss was not finite for {streak} batches in a row (epoch "
                        f"{epoch + 1}); lower lr={args.lr:g} or check the data"
                    )
            if i + 1 == window_start + window and accumulated:  # the window is complete: step
                skipped += not self._step(step, self.steps_per_epoch * self.epochs)
                step, accumulated = step + 1, 0
                if args.time and not self._agree(time.monotonic() < self._deadline()):
                    break
            if self.device.type == "cpu":
                self.step_threads.tick(len(images))
            if i == 0:
                first_step_done = time.monotonic()
            elif i == plan_after:  # time=: plan the run from this epoch's steps before they run out
                seconds_per_batch = (time.monotonic() - first_step_done) / i
                self._plan_epochs(epoch, seconds_per_batch * (batches - i - 1), seconds_per_batch * batches)
            self.run_callbacks("on_train_batch_end")
            means = {k.removeprefix("loss_"): v / max(seen, 1) for k, v in sums.items()}
            log.update(i + 1, seen, **means)
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}
                            | {"img/s": f"{seen / (time.perf_counter() - start):.1f}"})  # fmt: skip
        elapsed = time.perf_counter() - start
        means = {k: v / max(seen, 1) if seen else math.nan for k, v in sums.items()}
        rates = {f"lr/{group['name']}": group["lr"] for group in self.optimizer.param_groups}
        self.skipped += skipped
        return {**means, "images_per_s": seen / elapsed, "skipped": skipped, **rates}

    def _forward_backward(self, images: torch.Tensor, targets: list[dict], window: int) -> dict[str, float] | None:
        """Losses of one batch, their gradients (scaled for a window of `window` batches) accumulated; -> the
        batch's losses, or None when the loss is not finite on some rank (then nothing is accumulated)."""
        images = images.to(self.device, non_blocking=True)
        targets = [{k: t[k].to(self.device) for k in ("boxes", "labels", "masks") if k in t} for t in targets]
        with torch.autocast(self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            outputs = self.train_model(images, targets)
        losses = self.criterion({k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}, targets)
        loss = sum(losses.values())
        if not self._agree(bool(torch.isfinite(loss))):
            return None
        self.scaler.scale(loss / window).backward()
        return {**{key: losses[key].item() for key in self.loss_keys}, "loss": loss.item()}

    def train(self) -> Path:
        """Every epoch from the first (or the resumed one) to `args.epochs`; -> the run folder. A run that fails
        before writing a checkpoint leaves no run folder behind."""
        try:
            if self.main:
                make_dirs(self.save_dir / "weights")
            with run_lock(self.save_dir) if self.main else contextlib.nullcontext(), sigterm_raises():
                if self.main:
                    remove_partial_files(self.save_dir)  # of a save killed mid-way (no one else writes here now)
                    args = yaml.safe_dump(self.args.to_dict(), sort_keys=False).encode()
                    write_file(self.save_dir / "args.yaml", args)
                self._train()
        except BaseException:
            if self.main and self.made_run_dir:
                remove_if_unused(self.save_dir, keep_if_present="weights/last.pt", made_from=self.made_from)
            raise
        return self.save_dir

    def _train(self) -> None:
        args = self.args
        # A resumed run goes on from the seconds it spent; a new one counts its start-up.
        self.started = time.monotonic() - self.train_seconds if self.train_seconds else self.created
        epoch = self.start_epoch
        self.run_callbacks("on_train_start")
        while epoch < self.epochs:
            self.epoch = epoch
            self.run_callbacks("on_train_epoch_start")
            if self.mixing and epoch >= self.epochs - math.ceil(args.close_mosaic * self.epochs):
                self.mixing = False
                if args.verbose and self.main and (args.mosaic or args.mixup):
                    print(f"epoch {epoch + 1}: mosaic and mixup off for the final epochs")
            row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            self.metrics = dict(row)
            self.run_callbacks("on_train_epoch_end")
            if not all(bool(torch.isfinite(p).all()) for p in self.ema.module.parameters()):
                raise ModelOutputError(f"training diverged at epoch {epoch + 1}: the weights are no longer finite; "
                                       f"lower lr={args.lr:g}")  # fmt: skip
            fitness = self._validate(epoch, row)
            self.train_seconds, self.epochs_done = time.monotonic() - self.started, epoch + 1
            row["time"] = self.train_seconds  # wall seconds since the start, as ultralytics' results.csv
            if epoch == self.start_epoch:  # epochs are timed from here: the first one has start-up costs
                timed_from = (self.train_seconds, epoch + 1)
            if args.time:
                spent, timed_seconds, timed_epochs = self.train_seconds, *timed_from
                timed = epoch + 1 > timed_epochs  # else the first epoch alone, start-up and all
                per_epoch = (spent - timed_seconds) / (epoch + 1 - timed_epochs) if timed else spent / (epoch + 1)
                self._plan_epochs(epoch, 0.0, per_epoch)
            if self.main:  # after the plan and the clock, so last.pt resumes with both
                self._record(epoch, row, fitness)
            self.metrics = dict(row)
            self.run_callbacks("on_fit_epoch_end")
            stop = not self._agree(not self._patience_ran_out(epoch))
            if self.world > 1:
                dist.barrier()
            if stop:
                if args.verbose and self.main:
                    print(f"stopping early: no better val mAP50-95 for {args.patience} epochs (best: epoch "
                          f"{self.best_epoch + 1})")  # fmt: skip
                break
            epoch += 1
        if self.world > 1:
            self._check_in_sync()
        if self.main:
            self.finish()
        self.run_callbacks("on_train_end")

    def _plan_epochs(self, epoch: int, epoch_left: float, per_epoch: float) -> None:
        """time=: plan as many epochs as fit in what is left of the budget: epoch `epoch` ends in `epoch_left`
        seconds (0: it has), each later one takes `per_epoch` seconds (validation included), and the final scoring
        of the best weights about one validation. The schedule, warm-up and mosaic phase follow the plan; every
        rank plans as rank 0 does."""
        val_seconds = self.val_seconds
        if not val_seconds and self.val_set is not None:  # no validation timed yet: guessed from training's speed
            val_seconds = VAL_SHARE_OF_TRAINING * per_epoch * len(self.val_set) / max(len(self.train_set), 1)
            self.val_seconds = val_seconds  # until the first validation times itself
            epoch_left += val_seconds
            per_epoch += val_seconds
        seconds = torch.tensor([time.monotonic() - self.started, epoch_left, per_epoch, val_seconds],
                               dtype=torch.float64, device="cpu")  # fmt: skip
        if self.world > 1:
            seconds = seconds.to(self.device)
            dist.broadcast(seconds, src=0)
        spent, epoch_left, per_epoch, val_seconds = seconds.tolist()
        left = self.args.time * 3600 - spent - epoch_left - val_seconds
        more = math.floor(left / per_epoch) if per_epoch > 0 else 0
        planned = epoch + 1 + max(more, 0)
        if planned != self.epochs and self.args.verbose and self.main:
            print(f"time={self.args.time:g}h: {per_epoch:.1f} s per epoch, {planned} epochs fit "
                  f"(warm-up {self._warmup(planned)} steps)")  # fmt: skip
        self.epochs = planned

    def _deadline(self) -> float:
        """time=: when (time.monotonic()) an epoch stops taking steps: the budget's end less this epoch's validation
        and the final scoring."""
        return self.started + self.args.time * 3600 - 2 * self.val_seconds

    def _patience_ran_out(self, epoch: int) -> bool:
        """Early stopping: `patience` epochs validated since the best one (rank 0 knows; the others follow)."""
        return bool(self.main and self.args.patience and self.val_set is not None
                    and epoch - self.best_epoch >= self.args.patience)  # fmt: skip

    def _validate(self, epoch: int, row: dict[str, Any]) -> float | None:
        """Score the EMA weights on the val split into rank 0's `row`: each rank predicts its share of the images
        (every world-th one), rank 0 puts them back in order and scores them; -> val mAP50-95 on rank 0 (None on
        the others, without a val split, or for non-finite outputs)."""
        if self.val_set is None:
            return None
        started = time.monotonic()
        if self.world > 1:  # rank 0's weights: batch norm statistics follow each rank's own images
            for buffer in self.ema.module.buffers():
                dist.broadcast(buffer, src=0)
        try:
            inference = TorchInference(self.ema.module, self.device, threads=self.val_threads)
            shard = range(self.rank, len(self.val_set), self.world)
            found: list | str = predict_dataset(inference, self.val_set, self.args.batch, indices=shard)
        except ModelOutputError as error:  # never the best model; the run goes on (it may recover)
            found = str(error)
        shards = [found]
        if self.world > 1:  # every rank takes part, whatever it found
            shards = [None] * self.world if self.main else None
            dist.gather_object(found, shards, dst=0)
        fitness = None
        if self.main:
            names = VAL_KEYS + (MASK_VAL_KEYS if self.model.mask_head is not None else ())
            stats = dict.fromkeys(names, math.nan)
            if errors := [shard for shard in shards if isinstance(shard, str)]:
                print(f"warning: epoch {epoch + 1}: {errors[0]}")
            else:
                detections: list = [None] * len(self.val_set)
                masks: list | None = None if shards[0][1] is None else [None] * len(self.val_set)
                for rank, (shard_detections, shard_masks) in enumerate(shards):
                    detections[rank :: self.world] = shard_detections
                    if masks is not None:
                        masks[rank :: self.world] = shard_masks
                stats, _ = coco_metrics(self.val_set.annotations, detections, self.names, masks=masks)
                # A segmentation model's best weights are those of the best boxes and masks together.
                scores = [stats[k] for k in ("mAP50-95", "mask_mAP50-95") if k in stats]
                fitness = sum(scores) / len(scores)
            row.update({k: stats[k] for k in names})
        self.val_seconds = time.monotonic() - started
        return fitness

    def _record(self, epoch: int, row: dict[str, Any], fitness: float | None) -> None:
        """Print the epoch's row, save the checkpoints (last.pt holds every row so far), rewrite results.csv from
        them and redraw results.png. A kill between the two leaves a checkpoint whose resume writes the file again."""
        if self.args.verbose and not self.progress_bar:
            print(f"epoch {epoch + 1}/{self.epochs}: " + "  ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and not k.startswith("lr/")))  # fmt: skip
        if row["skipped"] and self.args.verbose:
            print(
                f"warning: epoch {epoch + 1}: {row['skipped']} batches or steps skipped (non-finite loss or gradients)"
            )
        self.results.append({k: round(v, 7) if isinstance(v, float) else v for k, v in row.items()})
        self._save(epoch, fitness)
        self._write_results()
        self.run_callbacks("on_model_save")

    def _write_results(self) -> None:
        """results.csv (atomically) from the rows of the epochs done, and results.png from it."""
        results_csv = self.save_dir / "results.csv"
        fields = list(dict.fromkeys(key for row in self.results for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.results)
        write_file(results_csv, text.getvalue().encode())
        if self.args.plots and self.results:
            plot_results(results_csv)

    def _check_in_sync(self) -> None:
        """All ranks must hold the same weights after training (DDP averages gradients; a drift is a bug)."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1).cpu()
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"ranks out of sync after training: weight checksums {[g.item() for g in gathered]}")
        if self.main and self.args.verbose:
            print(f"{self.world} ranks in sync (weight checksum {gathered[0].item():.6f})")
        dist.destroy_process_group()

    def finish(self) -> None:
        """Score best.safetensors on the val split: PR curves and confusion matrix plots, a per-class AP table."""
        args = self.args
        last_map = self.results[-1].get("mAP50-95", 0.0) if self.results else 0.0
        if self.val_set is not None and math.isnan(last_map):  # the last validation met non-finite outputs
            if not self.best.is_file():
                raise ModelOutputError(
                    f"training diverged: the model's outputs were not finite at epoch {self.epochs_done} and no epoch "
                    f"scored; lower lr={args.lr:g} (the run is in {self.save_dir})"
                )
            print(f"warning: the last epoch's outputs are not finite (training diverged): use {self.best} (epoch "
                  f"{self.best_epoch + 1}), not last.safetensors")  # fmt: skip
        if args.verbose:
            print(f"\n{self.epochs_done} epochs done; results in {self.save_dir}")
            if self.skipped:
                print(f"warning: {self.skipped} batches or steps skipped for non-finite losses or gradients")
        if self.val_set is None or not self.best.is_file():
            return
        best = copy.deepcopy(self.ema.module)
        best.load_state_dict(load_weights(self.best)[1])
        inference = TorchInference(best, self.device, threads=self.val_threads)
        detections, masks = predict_dataset(inference, self.val_set, args.batch)
        curves: dict[int, Any] = {}
        stats, per_class = coco_metrics(self.val_set.annotations, detections, self.names, curves, masks)
        if args.plots:
            plot_pr_curves(curves, self.names, self.save_dir / "pr_curve.png")
            matrix = confusion_matrix(self.val_set.annotations, detections, len(self.names))
            plot_confusion_matrix(matrix, self.names, self.save_dir / "confusion_matrix.png")
        if args.verbose:
            print("  ".join(f"{k} {stats[k]:.3f}" for k in ("mAP50-95", "mAP50", "mAP75", "AR100", *MASK_VAL_KEYS)
                            if k in stats))  # fmt: skip
            width = max(len(n) for n in self.names.values())
            print(f"{'class':<{width}}  AP50-95")
            for cls, ap in per_class.items():
                print(f"{self.names[cls]:<{width}}  {ap:.3f}")
