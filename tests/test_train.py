"""Training: a run's files, exact resume after a kill, fine-tuning heads, COCO metrics equal pycocotools'."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_CONFIG, TINY_DFINE_CONFIG, TINY_VIT_CONFIG, detect, detect_command, rows

from detr_toolkit import RTDETR
from detr_toolkit.data.coco import load_coco
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.engine.coco_metrics import STAT_NAMES, coco_metrics
from detr_toolkit.engine.trainer import adapt_to_classes
from detr_toolkit.settings import TrainArgs

TRAIN = ["epochs=3", "batch=4", "imgsz=64", "workers=0", "warmup_iters=4", "lr=0.0005", "seed=3"]


def launch(*args, **popen) -> subprocess.Popen:
    """Start `detect args...` without waiting for it (to kill, signal or race it)."""
    return subprocess.Popen(detect_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(shapes, tmp_path):
    """An uninterrupted 3-epoch run and one SIGKILLed after its first epoch then resumed end identical."""
    data, config = shapes
    common = ["train", "--model", config, "--data", data, *TRAIN]
    whole = launch(*common, f"project={tmp_path}", "name=whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    killed = launch(*common, f"project={tmp_path}", "name=killed")
    run = tmp_path / "killed"
    deadline = time.time() + 600
    while len(rows(run)) < 1 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert 1 <= len(rows(run)) < 3, "the run was not killed mid-training"
    # as if killed between last.pt and results.csv, and in the middle of a save: the resumed run writes the file
    # again from the checkpoint's rows, and the partial file goes
    (run / "results.csv").unlink()
    (run / "weights" / ".last.pt.a1b2c3.tmp").write_bytes(b"half a checkpoint")
    resumed = launch("train", "--resume", run / "weights" / "last.pt")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2, 3] and not list(run.glob("weights/.*.tmp"))
    final = [torch.load(tmp_path / n / "weights" / "last.pt", weights_only=True) for n in ("whole", "killed")]
    assert final[0]["epoch"] == final[1]["epoch"] == 2
    for key in ("model", "ema"):
        for name, tensor in final[0][key].items():
            assert torch.allclose(tensor.float(), final[1][key][name].float(), atol=1e-6), (key, name)
    # The run folder: settings, per-epoch results, plots, weights that predict.
    whole_run = tmp_path / "whole"
    assert yaml.safe_load((whole_run / "args.yaml").read_text())["epochs"] == 3
    assert [int(r["epoch"]) for r in rows(whole_run)] == [1, 2, 3] and "mAP50-95" in rows(whole_run)[0]
    for plot in ("results.png", "train_batch0.jpg", "pr_curve.png", "confusion_matrix.png"):
        assert (whole_run / plot).is_file(), plot
    model = RTDETR(whole_run / "weights" / "best.safetensors")
    assert model.names == {0: "circle", 1: "square", 2: "triangle", 3: "star"}
    assert len(model.predict(data.parent / "images" / "val", imgsz=64, conf=0.0, verbose=False)) == 4


@pytest.mark.slow
@pytest.mark.parametrize("names", [{0: "circle", 1: "star"}, {0: "hexagon", 1: "cross", 2: "ring", 3: "arrow"}])
def test_fine_tuning_resets_only_the_class_heads(names):
    """Other classes, fewer or as many: the class heads start afresh, everything else is the trained model's."""
    config = copy.deepcopy(TINY_CONFIG)
    trained_names = config.pop("names")
    source = RTDETR(copy.deepcopy(config)).model.state_dict()
    model, reset = adapt_to_classes(config, source, names, trained_names)
    assert {name.rsplit(".", 1)[0].rstrip("0123456789.") for name in reset} == {
        "decoder.enc_score_head", "decoder.dec_score_head", "decoder.denoising_class_embed",
    }  # fmt: skip
    kept = model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in source.items() if k not in reset)
    assert model.decoder.enc_score_head.out_features == len(names)
    same, reset = adapt_to_classes(config, source, trained_names, trained_names)  # more training, same classes
    assert reset == [] and all(torch.equal(same.state_dict()[k], v) for k, v in source.items())


def test_val_on_coco_and_yolo_formats_agree(shapes):
    data, config = shapes
    model = RTDETR(config)
    yolo = model.val(data, imgsz=64, verbose=False)
    coco = model.val(data.with_name("coco.yaml"), imgsz=64, verbose=False)
    assert yolo["metrics"] == pytest.approx(coco["metrics"], abs=1e-4)  # same images and boxes, two formats
    assert set(yolo["per_class"]) == {"circle", "square", "triangle", "star"}


def test_our_metrics_equal_pycocotools(shapes, tmp_path):
    """Detections scored through our conversion and faster-coco-eval equal pycocotools run on the JSON files
    directly: every COCOeval stat and each class's AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data, _ = shapes
    instances = data.parent / "annotations" / "instances_val.json"
    annotations, names = load_coco(instances, data.parent / "images" / "val")
    rng = np.random.default_rng(0)
    detections, records = [], []
    for image_id, annotation in enumerate(annotations):  # jittered ground truth, some misses, some false alarms
        boxes = annotation.boxes + rng.normal(0, 2, annotation.boxes.shape)
        extra = rng.uniform(0, 40, (2, 2))
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 15], 1)])
        classes = np.concatenate([annotation.classes, rng.integers(0, 4, 2)])
        scores = rng.uniform(0.05, 1, len(boxes))
        detections.append(np.column_stack([boxes, scores, classes]))
        coco_id = json.loads(instances.read_text())["images"][image_id]["id"]
        for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
            records.append({"image_id": coco_id, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    (tmp_path / "dets.json").write_text(json.dumps(records))
    truth = COCO(str(instances))
    evaluation = COCOeval(truth, truth.loadRes(str(tmp_path / "dets.json")), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    ours, per_class = coco_metrics(annotations, detections, names)
    assert [ours[k] for k in STAT_NAMES] == pytest.approx(list(evaluation.stats), abs=1e-12)
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, class)
    valid = [precision[:, :, k][precision[:, :, k] > -1] for k in range(precision.shape[2])]
    theirs = [values.mean() if values.size else np.nan for values in valid]
    assert list(per_class.values()) == pytest.approx(theirs, abs=1e-12, nan_ok=True)  # nan: a class without objects
    assert 0.2 < ours["mAP50"] < 1.0 and len(per_class) == 4


@pytest.mark.slow
def test_train_and_val_errors(shapes, tmp_path):
    data, config = shapes
    for args, message in [
        (["train", "--model", config], "train needs --data"),
        (["train", "--model", config, "--data", tmp_path / "none.yaml", "workers=0"], "none.yaml: dataset file not"),
        (["train", "--model", config, "--data", data, "colour=red"], "unrecognised argument 'colour=red'"),
        (["train", "--resume", tmp_path / "absent.pt"], "absent.pt: no such checkpoint to resume"),
        (["val", "--model", config], "val needs data="),
    ]:
        process = launch(*args)
        assert process.wait(timeout=120) == 2, args
        assert message in process.stderr.read(), args


@pytest.mark.slow
def test_cli_recipe_names_its_data_and_false_resume_trains(shapes, tmp_path):
    """`detect train --cfg recipe.yaml` takes the recipe's own model and data (as the Python API does); resume=no,
    or any false spelling, starts a run instead of resuming one."""
    data, config = shapes
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(config), "data": str(data), "epochs": 1, "batch": 4, "imgsz": 64,
                                      "workers": 0, "val": False, "plots": False}))  # fmt: skip
    process = launch("train", "--cfg", recipe, "resume=no", f"project={tmp_path}", "name=run")
    assert process.wait(timeout=300) == 0, process.stderr.read()
    assert (tmp_path / "run" / "weights" / "last.pt").is_file()
    assert not any(TrainArgs.create(data="d.yaml", resume=spelling).resume for spelling in ("false", "0", "off"))


@pytest.mark.slow
def test_sigterm_cleans_up_and_a_run_without_a_checkpoint_says_so(shapes, tmp_path):
    """SIGTERM (kill, a scheduler) stops a run as Ctrl-C does: no run folder with an empty weights/ stays. A run
    killed before its first checkpoint was complete says there is nothing to resume."""
    data, config = shapes
    run = launch("train", "--model", config, "--data", data, "epochs=500", "batch=2", "imgsz=128", "workers=0",
                 f"project={tmp_path}", "name=term")  # fmt: skip
    folder, deadline = tmp_path / "term", time.monotonic() + 300
    while not (folder / "args.yaml").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=300) == 128 + signal.SIGTERM
    assert not folder.exists() or (folder / "weights" / "last.pt").is_file()  # gone, or it holds a checkpoint
    (tmp_path / "killed" / "weights").mkdir(parents=True)
    (tmp_path / "killed" / "weights" / ".last.pt.x1y2.tmp").write_bytes(b"half")
    resumed = launch("train", "--resume", tmp_path / "killed" / "weights" / "last.pt")
    assert resumed.wait(timeout=120) == 2 and "no complete checkpoint" in resumed.stderr.read()


@pytest.mark.slow
def test_a_second_training_into_a_busy_run_folder_is_refused(shapes, tmp_path):
    """Two trainings into one run folder (exist_ok) would interleave results.csv and leave one's args.yaml beside
    the other's weights: the second is refused while the first runs."""
    data, config = shapes
    common = ["train", "--model", config, "--data", data, "batch=4", "imgsz=64", "workers=0", "--no-val",
              f"project={tmp_path}", "name=run", "exist_ok=True"]  # fmt: skip
    first = launch(*common, "epochs=500")
    try:
        args, deadline = tmp_path / "run" / "args.yaml", time.monotonic() + 300
        while not args.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.2)
        before = args.read_bytes()
        second = launch(*common, "epochs=1", "lr=0.0002")
        assert second.wait(timeout=300) == 2
        assert "run: another training is writing into this run folder" in second.stderr.read()
        assert args.read_bytes() == before and first.poll() is None
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    """torchrun with 2 gloo processes: each trains on half of every batch; the weights end identical on both;
    validation, each rank predicting every other image of an odd count, scores as one process does. Fine-tuned
    from the demo model, so that there is a score to compare."""
    data = make_synthetic(tmp_path / "data", train=12, val=5, size=64, max_objects=3)
    demo = Path(__file__).resolve().parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "detr_toolkit.cli",
               "train", "--model", str(demo), "--data", str(data), *TRAIN[1:], "epochs=2", "lr=0.0001",
               f"project={tmp_path}", "name=ddp"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 ranks in sync" in run.stdout
    results = rows(tmp_path / "ddp")
    assert [int(r["epoch"]) for r in results] == [1, 2]  # rank 0 alone writes
    alone = RTDETR(tmp_path / "ddp" / "weights" / "last.safetensors").val(data, imgsz=64, batch=4, verbose=False)
    assert alone["metrics"]["mAP50"] > 0.2  # something to compare (an all-zero score would match anything)
    for key in ("mAP50-95", "mAP50", "mAP75"):
        assert float(results[-1][key]) == pytest.approx(alone["metrics"][key], abs=1e-4)


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_run(shapes, tmp_path):
    """30 epochs: after the second, the process's resident memory stays within 5% of the second's (nothing kept
    per step or per epoch grows; scripts/bench_memory.py measures the demo recipe the same way)."""
    from detr_toolkit.engine.cpu_memory import process_memory

    data, config = shapes
    resident = []
    model = RTDETR(config)
    model.add_callback("on_fit_epoch_end", lambda trainer: resident.append(process_memory()["rss"]))
    model.train(data=data, epochs=30, batch=4, imgsz=64, workers=0, project=tmp_path, name="long", verbose=False,
                plots=False)  # fmt: skip
    assert len(resident) == 30
    settled = resident[1:]
    assert max(abs(rss - settled[0]) for rss in settled) <= 0.05 * settled[0], [round(r) for r in resident]


def test_confusion_matrix_counts():
    from pathlib import Path

    from detr_toolkit.data.annotations import Annotation
    from detr_toolkit.engine.confusion import confusion_matrix

    truth = Annotation(Path("x.jpg"), (100, 100), np.array([[0, 0, 10, 10], [50, 50, 70, 70]], np.float32),
                       np.array([0, 1]))  # fmt: skip
    detections = np.array([
        [0, 0, 10, 10, 0.9, 0],  # right
        [50, 50, 70, 70, 0.8, 0],  # a class-1 object called 0
        [80, 80, 90, 90, 0.7, 1],  # nothing there
        [1, 1, 9, 9, 0.1, 1],  # below conf: ignored
    ])  # fmt: skip
    assert confusion_matrix([truth], [detections], 2).tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_shipped_demo_model_finds_the_sample_shapes():
    """assets/rtdetr-tiny-shapes.safetensors (trained by the demo recipe) against assets/shapes.jpg's ground truth,
    which the synthetic generator redraws from its seed."""
    from pathlib import Path

    from torchvision.ops import box_iou

    from detr_toolkit.data.synthetic import CLASSES, draw_image

    assets = Path(__file__).resolve().parent.parent / "assets"
    _, objects = draw_image(np.random.default_rng(11), 288, 4)
    model = RTDETR(assets / "rtdetr-tiny-shapes.safetensors")
    assert list(model.names.values()) == CLASSES
    found = model.predict(assets / "shapes.jpg", conf=0.5, verbose=False)[0].boxes
    assert sorted(int(c) for c in found.cls) == sorted(o[0] for o in objects)
    truth = torch.tensor([o[1:] for o in objects], dtype=torch.float32)
    overlaps = box_iou(found.xyxy, truth)
    assert (overlaps.max(1).values > 0.7).all()
    assert (found.cls == torch.tensor([objects[i][0] for i in overlaps.argmax(1)], dtype=found.cls.dtype)).all()


def test_vit_lw_detr_model_trains(shapes, tmp_path):
    """The ViT family trains through the same entry point (Group DETR queries, IoU-aware BCE)."""
    data, _ = shapes
    model = RTDETR(copy.deepcopy(TINY_VIT_CONFIG))
    run = model.train(data=data, epochs=1, batch=4, workers=0, project=tmp_path, verbose=False, plots=False)
    assert [int(r["epoch"]) for r in rows(run)] == [1] and float(rows(run)[0]["loss"]) > 0
    assert (
        model.model.decoder.num_groups == 3 and len(model.predict(data.parent / "images" / "val", verbose=False)) == 4
    )


@pytest.mark.slow
def test_official_rtdetrv2_recipe_trains_through_the_cli(shapes, tmp_path):
    """RT-DETRv2 with ResNet-vd, narrowed from the shipped rtdetrv2-l.yaml by a `base:` config: trains with its
    family's loss through `detect train`; the frozen stem and batch-norm statistics stay as they were, the rest
    learns."""

    from detr_toolkit.weights import load_weights

    data, _ = shapes
    tiny = {
        "base": "rtdetrv2-l.yaml", "nc": 4, "imgsz": 64,
        "backbone": {"depths": [1, 1, 1, 1], "widths": [16, 32, 64, 128], "stem": 16},
        "encoder": {"hidden_dim": 32, "ffn_dim": 64, "num_heads": 4, "csp_blocks": 1},
        "decoder": {"hidden_dim": 32, "num_queries": 20, "num_layers": 2, "num_heads": 4, "num_points": [2, 3, 2],
                    "ffn_dim": 64, "eval_size": 64, "sampling": "discrete"},
    }  # fmt: skip
    (tmp_path / "tiny-v2.yaml").write_text(yaml.safe_dump(tiny))
    torch.manual_seed(0)
    start = RTDETR(tmp_path / "tiny-v2.yaml")
    start.save(tmp_path / "start.safetensors")
    run = detect("train", "--model", tmp_path / "start.safetensors", "--data", data, "epochs=1", "batch=4",
                 "imgsz=64", "workers=0", "--project", tmp_path, "--name", "v2")  # fmt: skip
    assert run.returncode == 0, run.stderr
    config, trained = load_weights(tmp_path / "v2" / "weights" / "last.safetensors")
    assert config["loss"]["alpha"] == 0.75 and config["decoder"]["sampling"] == "discrete"
    before = start.model.state_dict()
    frozen = [k for k in before if k.startswith("backbone.stem.") or ".norm." in k and k.startswith("backbone.")]
    assert frozen and all(torch.equal(before[k], trained[k]) for k in frozen)
    assert not torch.equal(
        before["backbone.stages.1.0.convs.0.conv.weight"], trained["backbone.stages.1.0.convs.0.conv.weight"]
    )


@pytest.mark.slow
def test_dfine_trains(shapes, tmp_path):
    """D-FINE (HGNetv2 with affine blocks, ELAN encoder, distribution-refining decoder), narrowed from the shipped
    dfine-n.yaml: trains through the same entry point and predicts afterwards."""
    data, _ = shapes
    tiny = copy.deepcopy(TINY_DFINE_CONFIG)
    (tmp_path / "tiny-dfine.yaml").write_text(yaml.safe_dump(tiny))
    model = RTDETR(tmp_path / "tiny-dfine.yaml")
    run = model.train(data=data, epochs=1, batch=4, workers=0, project=tmp_path, verbose=False, plots=False)
    assert [int(r["epoch"]) for r in rows(run)] == [1] and float(rows(run)[0]["loss"]) > 0
    assert len(model.predict(data.parent / "images" / "val", verbose=False)) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "narrowed",
    [
        {"base": "deimv2-pico.yaml", "backbone": {"stem": [8, 8], "layers_per_block": 2, "stages": [
            {"mid": 8, "out": 16, "blocks": 1, "kernel": 3, "light": False, "downsample": False},
            {"mid": 8, "out": 32, "blocks": 1, "kernel": 3, "light": False, "downsample": True},
            {"mid": 16, "out": 48, "blocks": 1, "kernel": 5, "light": True, "downsample": True}]},
         "encoder": {"hidden_dim": 32}, "decoder": {"hidden_dim": 32, "query_pos_width": 32}},
        {"base": "deimv2-s.yaml", "backbone": {"dim": 32, "depth": 3, "num_heads": 2, "ffn_dim": 64,
                                                 "num_registers": 2, "return_blocks": [0, 1, 2], "adapter_width": 8},
         "encoder": {"hidden_dim": 32, "ffn_dim": 64, "num_heads": 4}, "decoder": {"hidden_dim": 32,
                                                                                    "query_pos_width": 32}},
    ],
    ids=["lite", "dinov3"],
)  # fmt: skip
def test_deimv2_trains_through_the_cli(narrowed, shapes, tmp_path):
    """DEIMv2 (the lite HGNetv2 and the DINOv3 shapes, narrowed from the shipped configs) trains with DEIM's
    criterion through `detect train`, and predicts with what it learnt."""

    from detr_toolkit.weights import load_weights

    data, _ = shapes
    tiny = {**narrowed, "nc": 4, "imgsz": 64}
    tiny["decoder"] = {**tiny["decoder"], "num_queries": 20, "num_heads": 4, "ffn_dim": 64, "eval_size": 64}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    torch.manual_seed(0)
    start = RTDETR(tmp_path / "tiny.yaml")
    start.save(tmp_path / "start.safetensors")
    run = detect("train", "--model", tmp_path / "start.safetensors", "--data", data, "epochs=1", "batch=4",
                 "imgsz=64", "workers=0", "--project", tmp_path, "--name", "deim")  # fmt: skip
    assert run.returncode == 0, run.stderr
    config, trained = load_weights(tmp_path / "deim" / "weights" / "last.safetensors")
    assert config["loss"]["class_loss"] == "mal"
    before = start.model.state_dict()
    assert not torch.equal(before["decoder.dec_score_head.0.weight"], trained["decoder.dec_score_head.0.weight"])
    assert RTDETR(tmp_path / "deim" / "weights" / "last.safetensors").predict(data.parent / "images" / "val",
                                                                              verbose=False)  # fmt: skip
