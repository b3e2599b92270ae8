"""TensorBoard: the losses of every batch, each epoch's results.csv row (losses, the learning rate of each
parameter group, val mAPs, images/s) and, with plots on, the best weights' detections on a few val images, in
`runs/train/NAME/` (`tensorboard --logdir runs/train`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import epoch_scalars
from .previews import val_previews


class TensorBoardLogger:
    """The callbacks that write one training run's event file (see the module docstring)."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.step = 0  # batches seen, over the run (resumed runs go on from their epoch)

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        return {"on_train_batch_end": self.batch, "on_fit_epoch_end": self.epoch, "on_train_end": self.end}

    def _writer(self, trainer: Any) -> Any:
        """The run folder's SummaryWriter, made at the first event (a resumed run goes on from its epoch's step)."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.save_dir))
            self.step = trainer.epoch * trainer.steps_per_epoch * trainer.args.accumulate + trainer.batch_index
        return self.writer

    def batch(self, trainer: Any) -> None:
        writer = self._writer(trainer)
        self.step += 1
        for key, value in (trainer.loss_items or {}).items():
            writer.add_scalar(f"batch/{key}", value, self.step)

    def epoch(self, trainer: Any) -> None:
        writer = self._writer(trainer)
        for key, value in epoch_scalars(trainer.metrics).items():
            writer.add_scalar(key if "/" in key else f"epoch/{key}", value, trainer.epoch + 1)
        writer.flush()

    def end(self, trainer: Any) -> None:
        writer = self._writer(trainer)
        for index, image in enumerate(val_previews(trainer)):
            writer.add_image(f"val/{index}", image, trainer.epoch + 1, dataformats="HWC")
        writer.close()
