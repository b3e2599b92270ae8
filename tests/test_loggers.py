"""Experiment trackers read back: TensorBoard's event file, MLflow's store (its default SQLite database and a file
store), W&B's offline transaction log; each against the run's results.csv."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import rows

from detr_toolkit import RTDETR
from detr_toolkit.loggers import LOGGERS
from detr_toolkit.settings import TrainArgs

QUICK = {"batch": 4, "imgsz": 64, "workers": 0, "lr": 0.0005, "verbose": False}


def test_the_loggers_setting_names_every_logger():
    assert set(TrainArgs.settings()["loggers"].choices) == set(LOGGERS)


@pytest.mark.slow
def test_tensorboard_logs_what_results_csv_holds(shapes, tmp_path):
    """On by default where tensorboard is installed: each epoch's row (losses, lr of each group, mAPs), every
    batch's losses and, with plots, val images with the best weights' detections, read back from the event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data, config = shapes
    RTDETR(config).train(data=data, epochs=2, batch=4, imgsz=64, workers=0, lr=0.0005, project=tmp_path, name="tb",
                         verbose=False, plots=True)  # fmt: skip
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    results = rows(tmp_path / "tb")
    for tag, column in [("epoch/loss", "loss"), ("lr/backbone", "lr/backbone"), ("epoch/mAP50-95", "mAP50-95")]:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in results], rel=1e-5, abs=1e-7)
    assert len(events.Scalars("batch/loss")) == 2 * 3  # 12 images, batch 4
    assert {"val/0", "val/3"} <= set(events.Tags()["images"])
    RTDETR(config).train(data=data, epochs=1, batch=4, imgsz=64, workers=0, project=tmp_path, name="off",
                         verbose=False, plots=False, loggers=[])  # fmt: skip
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_mlflow_logs_what_results_csv_holds(shapes, tmp_path, monkeypatch):
    """loggers=[mlflow]: by default a SQLite store beside the runs (artifacts in the project folder); the settings
    as params, each epoch's row as metrics, the files and previews as artifacts, read back through MLflow's client;
    a resumed training goes on in the same MLflow run. MLFLOW_TRACKING_URI (here a file store) is used where set."""
    from mlflow import MlflowClient

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    data, config = shapes
    RTDETR(config).train(data=data, epochs=1, project=tmp_path, name="ml", plots=False, loggers=["mlflow"], **QUICK)
    RTDETR(config).train(resume=str(tmp_path / "ml" / "weights" / "last.pt"), epochs=2, plots=True)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(str(tmp_path)).experiment_id])
    assert (run.info.run_name, run.info.status) == ("ml", "FINISHED")
    assert run.data.params["lr"] == "0.0005" and run.data.params["epochs"] == "1"  # as the run started
    results = rows(tmp_path / "ml")
    for key in ("loss", "lr/backbone", "mAP50-95", "mAP50"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda metric: metric.step)
        assert [metric.step for metric in history] == [1, 2]
        assert [metric.value for metric in history] == pytest.approx([float(r[key]) for r in results], rel=1e-5,
                                                                     abs=1e-7)  # fmt: skip
    artifacts = {a.path for folder in (None, "weights", "val") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"args.yaml", "results.csv", "weights/best.safetensors", "val/0.png", "val/3.png"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    RTDETR(config).train(data=data, epochs=1, project=tmp_path, name="file", plots=False, loggers=["mlflow"], **QUICK)
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(str(tmp_path)).experiment_id])
    logged = [metric.value for metric in client.get_metric_history(run.info.run_id, "loss")]
    assert logged == pytest.approx([float(rows(tmp_path / "file")[0]["loss"])], rel=1e-5)


def wandb_records(path: Path) -> list:
    """The records of a W&B run's transaction log (`run-ID.wandb`): a 7-byte header (":W&B", magic, version),
    then LevelDB's log format (32 KiB blocks of chunks: CRC, length, type: full, first, middle, last), each
    record a wandb_internal_pb2.Record."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    records, position, pending = [], 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(Record.FromString(pending))
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_logs_what_results_csv_holds(shapes, tmp_path, monkeypatch):
    """loggers=[wandb] with WANDB_MODE=offline: the run's transaction log in the run folder holds the settings as
    config, each epoch's row, the previews and the best weights as a model artifact; a resumed training goes on in
    the same W&B run."""
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    data, config = shapes
    RTDETR(config).train(data=data, epochs=1, project=tmp_path, name="wb", plots=False, loggers=["wandb"], **QUICK)
    RTDETR(config).train(resume=str(tmp_path / "wb" / "weights" / "last.pt"), epochs=2, plots=True)
    logs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2 and len({log.stem for log in logs}) == 1  # two sessions of one W&B run
    records = [record for log in logs for record in wandb_records(log)]
    (started, _) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert started.display_name == "wb" and started.project == tmp_path.as_posix().strip("/").replace("/", "-")
    settings = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert settings["lr"] == 0.0005 and settings["epochs"] == 1
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
    results = rows(tmp_path / "wb")
    assert sorted(history) == [1, 2]
    for key in ("loss", "lr/backbone", "mAP50-95"):
        assert [history[step][key] for step in (1, 2)] == pytest.approx([float(r[key]) for r in results], rel=1e-5,
                                                                        abs=1e-7)  # fmt: skip
    assert history[2]["val/0/_type"] == "image-file"  # an image's fields are nested keys: (val/0, _type), ...
    assert (logs[-1].parent / "files" / history[2]["val/0/path"]).is_file()
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [(a.type, a.name) for a in artifacts] == [("model", f"run-{logs[0].stem[4:]}-model")] * 2  # each session's
