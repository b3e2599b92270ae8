"""Training's guards: non-finite losses (alone and under DDP), accumulation windows, learning rates per group,
resume with changed settings, diverging runs, and models whose outputs are not finite."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from conftest import PHOTOS, TINY_CONFIG, rows

from detr_toolkit import RTDETR
from detr_toolkit.cli import main
from detr_toolkit.engine.trainer import Trainer
from detr_toolkit.errors import ConfigError, ModelOutputError
from detr_toolkit.loss import DetectionCriterion
from detr_toolkit.settings import TrainArgs

QUICK = {"batch": 4, "imgsz": 64, "workers": 0, "warmup_iters": 0, "plots": False, "verbose": False, "seed": 1}


def trainer(shapes, tmp_path, **settings) -> Trainer:
    data, _ = shapes
    args = TrainArgs.create(**{**QUICK, "data": str(data), "project": str(tmp_path), "val": False, **settings})
    return Trainer({**copy.deepcopy(TINY_CONFIG)}, None, args)


def poison(monkeypatch, calls: set[int]) -> None:
    """Make the criterion's loss NaN on the given (0-based) calls."""
    forward, count = DetectionCriterion.forward, [0]

    def nan_on_some_calls(self, outputs, targets):
        losses = forward(self, outputs, targets)
        count[0] += 1
        return {k: v * math.nan for k, v in losses.items()} if count[0] - 1 in calls else losses

    monkeypatch.setattr(DetectionCriterion, "forward", nan_on_some_calls)


def test_a_skipped_batch_keeps_the_rest_of_its_window(shapes, tmp_path, monkeypatch):
    """accumulate=2 over 3 batches: windows [0, 1] and [2]. Batch 1's loss is NaN: it is left out, counted, and
    batch 0's gradients still make the first window's step; both windows step."""
    run = trainer(shapes, tmp_path, epochs=1, accumulate=2)
    poison(monkeypatch, {1})
    stats = run.train_epoch(0)
    assert stats["skipped"] == 1
    assert run.ema.updates == 2 == run.steps_per_epoch


def test_a_partial_window_steps_at_the_end_of_the_epoch(shapes, tmp_path):
    """The last window (1 batch of accumulate=2) steps before the epoch ends: no gradient carries into the next."""
    run = trainer(shapes, tmp_path, epochs=1, accumulate=2)
    run.train_epoch(0)
    assert run.ema.updates == 2
    assert all(p.grad is None for p in run.model.parameters())


@pytest.mark.slow
def test_learning_rates_are_logged_per_group(shapes, tmp_path):
    data, config = shapes
    run = RTDETR(config).train(data=data, epochs=1, lr=2e-3, lr_backbone=3e-4, schedule="constant", project=tmp_path,
                               **QUICK)  # fmt: skip
    row = rows(run)[0]
    assert "lr" not in row
    assert float(row["lr/head"]) == pytest.approx(2e-3) and float(row["lr/backbone"]) == pytest.approx(3e-4)


@pytest.mark.slow
def test_ddp_ranks_agree_when_one_rank_sees_a_non_finite_loss(shapes, tmp_path):
    """Rank 1 alone gets a NaN loss on its second batch: both ranks skip that batch together (one skipping while
    the other all-reduces its gradients would hang), the run ends in sync and reports the skip."""
    data, config = shapes
    script = tmp_path / "nan_on_rank1.py"
    script.write_text(
        textwrap.dedent("""
        import math, os, sys
        from detr_toolkit.cli import main
        from detr_toolkit.loss import DetectionCriterion
        forward, count = DetectionCriterion.forward, [0]
        def nan_on_rank1(self, outputs, targets):
            losses = forward(self, outputs, targets)
            count[0] += 1
            if os.environ["RANK"] == "1" and count[0] == 2:
                return {k: v * math.nan for k, v in losses.items()}
            return losses
        DetectionCriterion.forward = nan_on_rank1
        sys.exit(main(sys.argv[1:]))
    """)
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), "train",
               "--model", str(config), "--data", str(data), "epochs=1", "batch=4", "imgsz=64", "workers=0",
               "warmup_iters=0", "plots=false", "val=false", f"project={tmp_path}", "name=ddp"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 ranks in sync" in run.stdout
    assert rows(tmp_path / "ddp")[0]["skipped"] == "1"


@pytest.mark.slow
def test_resume_applies_safe_changes_and_refuses_others(shapes, tmp_path):
    data, config = shapes
    common = ["train", "--model", str(config), "--data", str(data), *(f"{k}={v}" for k, v in QUICK.items())]
    assert main([*common, "epochs=1", f"project={tmp_path}", "name=run"]) == 0
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(tmp_path / "run", moved)  # a run folder moved (or copied from another machine) resumes where it is
    last = moved / "weights" / "last.pt"
    with pytest.raises(ConfigError, match=r"keeps its settings \(lr=0\.0001\); it may change only epochs"):
        main(["--debug", "train", "--resume", str(last), "lr=0.1", "epochs=2"])
    assert main(["train", "--resume", str(last), "epochs=2"]) == 0
    assert [r["epoch"] for r in rows(moved)] == ["1", "2"]
    assert yaml.safe_load((moved / "args.yaml").read_text())["epochs"] == 2
    assert not (tmp_path / "run").exists(), "resume wrote into the folder the checkpoint was saved in, not where it is"
    with pytest.raises(ConfigError, match="has trained all of its 2 epochs"):
        main(["--debug", "train", "--resume", str(last)])


def test_predictions_follow_weights_changed_after_the_first_predict(tiny_weights):
    """The predictor's fused copy is rebuilt when the model's weights change (load_state_dict, training)."""
    model = RTDETR(tiny_weights)
    before = model.predict(PHOTOS[0], conf=0.0, verbose=False)[0].boxes.data
    torch.manual_seed(5)
    other = RTDETR(copy.deepcopy(TINY_CONFIG))
    model.model.load_state_dict(other.model.state_dict())
    after = model.predict(PHOTOS[0], conf=0.0, verbose=False)[0].boxes.data
    assert not torch.equal(before, after)
    assert torch.allclose(after, other.predict(PHOTOS[0], conf=0.0, verbose=False)[0].boxes.data)


@pytest.mark.slow
def test_a_model_with_nan_weights_is_an_error_in_predict_and_val(shapes, tmp_path, tiny_weights, capsys):
    data, _ = shapes
    model = RTDETR(tiny_weights)
    with torch.no_grad():
        model.model.decoder.dec_bbox_head[-1].layers[-1].bias.fill_(math.nan)
    broken = model.save(tmp_path / "nan.safetensors")
    with pytest.raises(ModelOutputError, match=r"bus\.jpg: the model's outputs are not finite"):
        RTDETR(broken).predict(PHOTOS[0], verbose=False)
    assert main(["val", "--model", str(broken), "--data", str(data), "imgsz=64"]) == 2
    assert "the model's outputs are not finite" in capsys.readouterr().err


def test_a_diverging_run_stops_and_never_keeps_a_broken_best(shapes, tmp_path, capsys):
    data, config = shapes
    code = main(["train", "--model", str(config), "--data", str(data), "epochs=4", "lr=1e6", "lr_backbone=1e6",
                 "clip_grad=0", *(f"{k}={v}" for k, v in QUICK.items()), f"project={tmp_path}",
                 "name=diverge"])  # fmt: skip
    assert code == 2
    assert "training diverged" in capsys.readouterr().err
    best = tmp_path / "diverge" / "weights" / "best.safetensors"
    if best.exists():  # an epoch before the divergence may have been the best; it is finite
        finite = RTDETR(best).model.state_dict().values()
        assert all(torch.isfinite(t).all() for t in finite if t.is_floating_point())


def test_a_run_whose_every_validation_is_broken_is_not_done(shapes, tmp_path, capsys):
    """lr=1e10: one step makes the weights huge but finite, the rest are skipped, every validation meets NaN: an
    error naming lr (exit 2), not "1 epochs done"; the run folder is kept as it is."""
    data, config = shapes
    code = main(["train", "--model", str(config), "--data", str(data), "epochs=1", "lr=1e10",
                 *(f"{k}={v}" for k, v in QUICK.items()), f"project={tmp_path}", "name=huge"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "training diverged: the model's outputs were not finite at epoch 1 and no epoch scored; lower lr=1e+10" in err
    )
    assert (tmp_path / "huge" / "weights" / "last.pt").is_file()
    assert not (tmp_path / "huge" / "weights" / "best.safetensors").exists()


@pytest.mark.slow
def test_a_seeded_run_repeats_its_losses_and_weights(shapes, tmp_path):
    """What the README promises for seed=: on the same machine and thread count, a run repeats its losses and
    weights bit for bit, with augmentation drawn in a data-loader worker process and compute on 2 threads."""
    data, config = shapes
    runs = []
    for name in ("first", "second"):
        settings = {**QUICK, "workers": 1, "threads": 2}
        runs.append(RTDETR(config).train(data=data, epochs=2, project=tmp_path, name=name, **settings))
    assert [r["loss"] for r in rows(runs[0])] == [r["loss"] for r in rows(runs[1])]
    first, second = (torch.load(run / "weights" / "last.pt", weights_only=True)["model"] for run in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_callbacks_run_at_their_events_with_the_trainer(shapes, tmp_path):
    """ultralytics' add_callback surface: each event in order, with what the trainer holds there; the callbacks
    stay with the model for the next train(); an unknown event is one error; a callback's error stops the run."""
    from detr_toolkit.errors import ConfigError

    data, config = shapes
    model = RTDETR(str(config))
    seen = []

    def record(event):
        def callback(trainer):
            seen.append(event)
            if event == "on_pretrain_routine_end":
                assert trainer.model is not None and trainer.optimizer is not None and trainer.save_dir.is_dir()
            if event == "on_train_batch_end":
                assert trainer.loss_items is None or math.isfinite(trainer.loss_items["loss"])
            if event == "on_train_epoch_end":
                assert "loss" in trainer.metrics and "mAP50-95" not in trainer.metrics
            if event == "on_fit_epoch_end":
                assert trainer.metrics["epoch"] == trainer.epoch + 1 and "mAP50-95" in trainer.metrics
            if event == "on_model_save":
                assert trainer.last.is_file() and (trainer.save_dir / "results.csv").is_file()

        return callback

    from detr_toolkit.engine.callbacks import EVENTS

    for event in EVENTS:
        model.add_callback(event, record(event))
    run = model.train(data=str(data), epochs=2, project=str(tmp_path), name="calls", **QUICK)
    batches = math.ceil(12 / QUICK["batch"])
    epoch = ["on_train_epoch_start", *["on_train_batch_end"] * batches, "on_train_epoch_end", "on_model_save",
             "on_fit_epoch_end"]  # fmt: skip
    assert seen == ["on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", *epoch, *epoch,
                    "on_train_end"]  # fmt: skip
    assert len(rows(run)) == 2
    assert all(len(model.callbacks[event]) == 1 for event in EVENTS)  # kept for the next train()

    with pytest.raises(ConfigError, match="callback event 'on_fit_end' unknown"):
        model.add_callback("on_fit_end", print)
    model.clear_callback("on_train_batch_end")
    assert model.callbacks["on_train_batch_end"] == []

    def stop(trainer):
        raise KeyboardInterrupt

    model.add_callback("on_fit_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(data), epochs=2, project=str(tmp_path), name="stopped", **QUICK)
    assert (tmp_path / "stopped" / "weights" / "last.pt").is_file()  # the epoch's checkpoint is kept
