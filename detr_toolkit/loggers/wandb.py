"""Weights & Biases: the training arguments as the run's config, each epoch's results.csv row (step = epoch), and
at the end, with plots on, the best weights' detections on a few val images and the best weights as a model
artifact.

The run's files go to `{run folder}/wandb/`; project: WANDB_PROJECT or the project folder's path with `-` for its
separators (`runs-train`); run name: the run folder's name. W&B's own settings apply: WANDB_MODE=offline keeps it
all on disk (`wandb sync` uploads it later), WANDB_API_KEY or `wandb login` online. A resumed training goes on in
the W&B run its folder holds."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import epoch_scalars
from .previews import val_previews

PROJECT_LENGTH = 128  # W&B's longest project name


def project_name(project: str) -> str:
    """A W&B project name for the project folder `project`: W&B refuses / \\ # ? % : in one."""
    return re.sub(r"[/\\#?%:]+", "-", project).strip("-")[-PROJECT_LENGTH:] or "detr-toolkit"


class WandbLogger:
    """The callbacks that log one training run to W&B (see the module docstring)."""

    def __init__(self) -> None:
        self.run: Any = None

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        return {"on_train_start": self.start, "on_fit_epoch_end": self.epoch, "on_train_end": self.end}

    def start(self, trainer: Any) -> None:
        import wandb

        save_dir = Path(trainer.save_dir)
        earlier = save_dir / "wandb" / "latest-run"  # W&B's link to its newest run folder (run-DATE-ID)
        resumed = trainer.start_epoch > 0 and earlier.exists()
        self.run = wandb.init(
            project=None if os.environ.get("WANDB_PROJECT") else project_name(str(trainer.args.project)),
            name=save_dir.name,
            dir=str(save_dir),
            job_type="train",
            id=earlier.resolve().name.rsplit("-", 1)[-1] if resumed else None,
            resume="allow" if resumed else None,
            config=None if resumed else trainer.args.to_dict(),
        )

    def epoch(self, trainer: Any) -> None:
        self.run.log(epoch_scalars(trainer.metrics), step=trainer.epoch + 1)

    def end(self, trainer: Any) -> None:
        import wandb

        previews = val_previews(trainer)
        if previews:
            self.run.log({f"val/{i}": wandb.Image(image) for i, image in enumerate(previews)}, step=trainer.epoch + 1)
        if trainer.best.is_file():
            artifact = wandb.Artifact(f"run-{self.run.id}-model", type="model")
            artifact.add_file(str(trainer.best))
            self.run.log_artifact(artifact, aliases=["best"])
        self.run.finish()
