"""Small-data training: the time budget, settings adapted to the data, the small-data recipe."""

from __future__ import annotations

import copy
import re
import time

import pytest
import torch
import yaml
from conftest import TINY_CONFIG, TINY_DFINE_CONFIG, TINY_VIT_CONFIG, detect

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.loss import build_criterion


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """12 training images of up to 6 objects, and a model with 4 queries."""
    root = tmp_path_factory.mktemp("crowded")
    data = make_synthetic(root, train=12, val=4, size=64, max_objects=6)
    config = {k: v for k, v in copy.deepcopy(TINY_CONFIG).items() if k != "names"}
    config["decoder"]["num_queries"] = 4
    (root / "few-queries.yaml").write_text(yaml.safe_dump(config))
    return data, root / "few-queries.yaml"


@pytest.mark.slow
@pytest.mark.wall_clock
def test_time_budget_ends_inside_it_with_scored_best_weights(crowded, tmp_path):
    """time= (hours) overrides epochs: the run plans the epochs that fit, stops inside the budget and scores its
    best weights; warm-up and queries fitted to the 12-image dataset are printed."""
    data, config = crowded
    budget_hours = 0.004  # 14.4 s
    started = time.monotonic()
    run = detect("train", "--model", config, "--data", data, "epochs=1000", "batch=4", "imgsz=64", "workers=0",
                 f"time={budget_hours}", "mosaic=0.5", "mixup=0.5", "o2m=2", "--project", tmp_path,
                 "--name", "timed")  # fmt: skip
    wall = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    assert "adapted to the data: num_queries 4 -> " in run.stdout  # 6 objects per image at most, mosaic on
    assert "adapted to the data: warmup_iters 2000 -> 300: at most 10% of the run's 3000 optimizer steps" in run.stdout
    checkpoint = torch.load(tmp_path / "timed" / "weights" / "last.pt", weights_only=True)
    assert checkpoint["train_seconds"] <= budget_hours * 3600
    epochs = checkpoint["epoch"] + 1
    assert 2 <= epochs < 1000 and checkpoint["planned_epochs"] == epochs
    assert f"{epochs} epochs done" in run.stdout and "AP50-95" in run.stdout.split("epochs done")[1]
    assert (tmp_path / "timed" / "weights" / "best.safetensors").is_file()
    assert wall < budget_hours * 3600 + 60  # start-up and the final scoring besides
    # A finished time= run says how to go on, and goes on when given more time: time= may change on resume.
    last = tmp_path / "timed" / "weights" / "last.pt"
    again = detect("train", "--resume", last)
    assert again.returncode == 2 and "give time= more to continue" in again.stderr
    more = detect("train", "--resume", last, f"time={2 * budget_hours}")
    assert more.returncode == 0, more.stderr
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] + 1 > epochs and resumed["train_seconds"] <= 2 * budget_hours * 3600


@pytest.mark.slow
def test_given_settings_are_not_adapted_and_mixing_stops_for_the_tail(crowded, tmp_path):
    data, config = crowded
    run = detect("train", "--model", config, "--data", data, "epochs=2", "batch=4", "imgsz=64", "workers=0",
                 "warmup_iters=50", "mixup=0.5", "close_mosaic=0.5", "--no-val", "--no-plots", "--project",
                 tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "warmup_iters" not in run.stdout and "num_queries 4 -> 10" in run.stdout  # 6 objects x 1.5, no mosaic
    assert "epoch 2: mosaic and mixup off for the final epochs" in run.stdout


@pytest.mark.parametrize("family", ["rtdetr", "dfine", "lwdetr"])
def test_one_to_many_branch_trains_and_leaves_the_rest_alone(family, tmp_path):
    """The hybrid-matching branch adds _o2m losses that reach the weights; the one-to-one outputs (and so their
    losses) are those of the model without it, and inference ignores it."""
    config = {"rtdetr": TINY_CONFIG, "dfine": TINY_DFINE_CONFIG, "lwdetr": TINY_VIT_CONFIG}[family]
    config = {k: v for k, v in copy.deepcopy(config).items() if k != "names"}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    detector = RTDETR(tmp_path / "model.yaml").model.train()
    criterion = build_criterion(config.get("loss"), config["nc"])
    images = torch.rand(2, 3, 128, 128)  # tokens enough for the branch's queries in every family
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]), "labels": torch.tensor([0, 1])},
               {"boxes": torch.tensor([[0.6, 0.4, 0.3, 0.2]]), "labels": torch.tensor([2])}]  # fmt: skip
    torch.manual_seed(1)
    plain = detector(images, targets)
    plain_losses = criterion(plain, targets)
    detector.decoder.one_to_many_queries = 2 * detector.decoder.num_queries
    criterion.one_to_many_copies = 3
    torch.manual_seed(1)
    hybrid = detector(images, targets)
    losses = criterion(hybrid, targets)
    for key in ("boxes", "logits", "enc_boxes", "enc_logits", "dn_boxes"):
        if key in plain:
            torch.testing.assert_close(hybrid[key], plain[key])
    branch = hybrid["one_to_many"]
    assert branch["boxes"].shape[2] == 2 * detector.decoder.num_queries
    extra = {k: v for k, v in losses.items() if k.endswith("_o2m")}
    assert {k.removesuffix("_o2m") for k in extra} == {k for k in plain_losses if not k.endswith("_dn")}
    assert all(torch.isfinite(v) for v in extra.values()) and extra["loss_class_o2m"] > 0
    for name, value in plain_losses.items():
        torch.testing.assert_close(losses[name], value)
    sum(extra.values()).backward()
    head = detector.decoder.dec_score_head[-1] if family != "lwdetr" else detector.decoder.score_head
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    detector.eval()
    with torch.no_grad():
        with_branch = detector(images)
        detector.decoder.one_to_many_queries = 0
        without = detector(images)
    assert with_branch.keys() == without.keys() == {"boxes", "logits"}
    for key in without:
        torch.testing.assert_close(with_branch[key], without[key])


@pytest.mark.slow
@pytest.mark.wall_clock
def test_a_short_budget_is_planned_from_the_first_epochs_steps(tmp_path, capsys):
    """A 30 s budget of epochs that take seconds (the issue's case: the whole run stayed in a warm-up planned from
    the default 72 epochs): the plan comes from the first epoch's own steps, before they run out, so warm-up is
    at most a tenth of the planned steps and the schedule runs to its end; the run ends inside budget + 10%;
    a log (not a terminal) gets a progress line every PROGRESS_SECONDS (shortened here) inside an epoch."""
    import csv

    from detr_toolkit.engine import progress

    data = make_synthetic(tmp_path / "shapes", train=240, val=8, size=96)
    budget = 30.0
    progress_seconds, progress.PROGRESS_SECONDS = progress.PROGRESS_SECONDS, 1.0
    started = time.monotonic()
    try:
        run = RTDETR("rtdetr-tiny.yaml").train(data=data, time=budget / 3600, batch=8, imgsz=96, workers=0,
                                               lr=1e-3, plots=False, project=tmp_path, name="short")  # fmt: skip
    finally:
        progress.PROGRESS_SECONDS = progress_seconds
    wall = time.monotonic() - started
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert wall <= 1.1 * budget, wall
    checkpoint = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert checkpoint["planned_epochs"] == len(rows) >= 2
    assert float(rows[-1]["lr/head"]) < 0.3e-3  # the cosine ran down, not a run stuck in its warm-up
    out = capsys.readouterr().out
    plan = re.search(r"time=[\d.e-]+h: [\d.]+ s per epoch, (\d+) epochs fit \(warm-up (\d+) steps\)", out)
    assert plan and out.index(plan[0]) < out.index("epoch 1/")  # planned inside the first epoch
    assert int(plan[2]) <= 0.1 * int(plan[1]) * 30  # 240 images / batch 8 = 30 steps an epoch
    assert re.search(r"^epoch 1: step \d+/30  [\d.]+ img/s  class [\d.]+ .* s left$", out, re.MULTILINE), out
