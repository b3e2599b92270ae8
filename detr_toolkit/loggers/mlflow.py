"""MLflow: the training arguments as params, each epoch's results.csv row as metrics (step = epoch), and at the end
args.yaml, results.csv, results.png, the best weights and, with plots on, their detections on a few val images as
artifacts.

Where: MLFLOW_TRACKING_URI (a server, a database, a file store) if set, else a SQLite database beside the runs,
`{project}/mlflow.db`, its artifacts in `{project}/mlartifacts` (`mlflow ui --backend-store-uri
sqlite:///runs/train/mlflow.db`). Experiment: MLFLOW_EXPERIMENT_NAME or the project folder (`runs/train`); run: the
run folder's name. A resumed training goes on in the MLflow run of its folder (found by the `detr_toolkit.run_dir`
tag); a run cut off stays RUNNING until it is resumed and ends."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import epoch_scalars
from .previews import val_previews

RUN_TAG = "detr_toolkit.run_dir"  # the run folder, resolved: how a resumed training finds its MLflow run
PARAM_LENGTH = 500  # MLflow's shortest limit on a param value (older servers)
BATCH = 100  # params per log_batch call (MLflow's limit)


class MLflowLogger:
    """The callbacks that log one training run to MLflow (see the module docstring)."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id = ""

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        return {"on_train_start": self.start, "on_fit_epoch_end": self.epoch, "on_train_end": self.end}

    def start(self, trainer: Any) -> None:
        from mlflow import MlflowClient

        project = Path(trainer.args.project)
        chosen = os.environ.get("MLFLOW_TRACKING_URI")  # else the SQLite store beside the runs
        uri = chosen or f"sqlite:///{(project / 'mlflow.db').resolve()}"
        project.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(trainer.args.project)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None if chosen else (project / "mlartifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run_dir = str(Path(trainer.save_dir).resolve())
        earlier = self._run_of(experiment_id, run_dir) if trainer.start_epoch else None
        if earlier:
            self.run_id = earlier
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment_id, run_name=Path(trainer.save_dir).name, tags={RUN_TAG: run_dir})
        self.run_id = run.info.run_id
        self._log_params(trainer.args.to_dict())
        if trainer.args.verbose and not chosen:
            print(f"MLflow: {uri}, experiment {name!r} (mlflow ui --backend-store-uri {uri})")

    def _run_of(self, experiment_id: str, run_dir: str) -> str | None:
        """The newest MLflow run of the run folder `run_dir`, if any."""
        token = None
        while True:
            page = self.client.search_runs([experiment_id], order_by=["attributes.start_time DESC"],
                                           max_results=1000, page_token=token)  # fmt: skip
            for run in page:
                if run.data.tags.get(RUN_TAG) == run_dir:
                    return run.info.run_id
            token = page.token
            if not token:
                return None

    def _log_params(self, settings: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in settings.items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[first : first + BATCH])

    def epoch(self, trainer: Any) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, trainer.epoch + 1) for key, value in epoch_scalars(trainer.metrics).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, trainer: Any) -> None:
        save_dir = Path(trainer.save_dir)
        for path in (save_dir / "args.yaml", save_dir / "results.csv", save_dir / "results.png"):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if trainer.best.is_file():
            self.client.log_artifact(self.run_id, str(trainer.best), "weights")
        for index, image in enumerate(val_previews(trainer)):
            self.client.log_image(self.run_id, image, f"val/{index}.png")
        self.client.set_terminated(self.run_id, "FINISHED")
