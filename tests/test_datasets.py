"""Dataset formats: YOLO and COCO read into the same annotations; bad labels are named by file and line."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from detr_toolkit.data.annotation_table import AnnotationTable
from detr_toolkit.data.annotations import Annotation
from detr_toolkit.data.coco import load_coco
from detr_toolkit.data.dataset import DetectionDataset
from detr_toolkit.data.yolo import load_yolo
from detr_toolkit.engine.cpu_memory import process_memory
from detr_toolkit.errors import DatasetError, SourceError


def write_image(path, height=60, width=80):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


@pytest.fixture
def yolo(tmp_path):
    """Two train images (one without labels), names as a list."""
    write_image(tmp_path / "images" / "train" / "a.jpg")
    write_image(tmp_path / "images" / "train" / "b.png")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.2 0.2\n\n")
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "names": ["cat", "dog"]}))
    return data


def test_yolo_labels_become_pixel_boxes(yolo):
    annotations, names = load_yolo(yolo, "train")
    assert names == {0: "cat", 1: "dog"}
    first, second = annotations
    assert first.size == (60, 80) and first.classes.tolist() == [0, 1]
    np.testing.assert_allclose(first.boxes[0], [30, 15, 50, 45])  # cx=40, cy=30, w=20, h=30
    assert second.boxes.shape == (0, 4)  # no label file: an image without objects


@pytest.mark.parametrize(
    "line, problem",
    [
        ("5 0.5 0.5 0.2 0.2", "class 5 out of range 0..1"),
        ("0 0.5 0.5 0.0 0.2", "box of zero size"),
        ("0 0.95 0.5 0.3 0.2", r"box \[64.0, 24.0, 88.0, 36.0\] outside the 80x60 image"),
        ("0 0.5 0.5 0.2", "malformed label line"),
        ("cat 0.5 0.5 0.2 0.2", "malformed label line"),
    ],
)
def test_bad_yolo_labels_name_file_and_line(yolo, line, problem):
    label = yolo.parent / "labels" / "train" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.25 0.5\n{line}\n")
    with pytest.raises(DatasetError, match=rf"a\.txt:2: {problem}"):
        load_yolo(yolo, "train")
    with pytest.warns(UserWarning, match=rf"a\.txt:2: {problem}.*skipped"):
        annotations, _ = load_yolo(yolo, "train", on_error="skip")
    assert len(annotations[0].classes) == 1  # the good box stays


def test_yolo_dataset_errors(yolo, tmp_path):
    with pytest.raises(DatasetError, match="no 'val' split"):
        load_yolo(yolo, "val")
    (yolo.parent / "images" / "train" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"b\.png: not a readable image"):
        load_yolo(yolo, "train")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": "nowhere", "names": ["x"]}))
    with pytest.raises(DatasetError, match="neither a folder nor a list file"):
        load_yolo(bad, "train")


def test_label_files_that_are_not_files_or_serve_two_images(yolo):
    """A folder or a FIFO where a label file belongs is not "no objects"; x.jpg and x.png beside each other would
    both take labels/x.txt."""
    labels, images = yolo.parent / "labels" / "train", yolo.parent / "images" / "train"
    (labels / "b.txt").mkdir()
    with pytest.raises(DatasetError, match=r"b\.txt: not a label file"):
        load_yolo(yolo, "train")
    (labels / "b.txt").rmdir()
    os.mkfifo(labels / "b.txt")  # reading it would wait for a writer forever
    with pytest.raises(DatasetError, match=r"b\.txt: not a label file"):
        load_yolo(yolo, "train")
    (labels / "b.txt").unlink()
    write_image(images / "a.png")
    with pytest.raises(DatasetError, match=r"a\.(jpg|png): a\.(jpg|png) has the same label file .*a\.txt"):
        load_yolo(yolo, "train")


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        write_image(images / name)
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 60, "width": 80} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "boat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "iscrowd": 0, "area": 600},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 0, "area": 25},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [40, 20, 10, 10], "iscrowd": 0, "area": 100},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [0, 0, 80, 60], "iscrowd": 1, "area": 4800},
            {"id": 14, "image_id": 3, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def test_coco_all_and_subsets(coco):
    instances, images = coco
    everything, names = load_coco(instances, images)
    assert names == {0: "person", 1: "car", 2: "boat"} and len(everything) == 3
    assert everything[1].classes.tolist() == [1]  # the crowd box is left out
    np.testing.assert_allclose(everything[0].boxes[0], [10, 10, 30, 40])
    subset, names = load_coco(instances, images, categories=["car", "person"])
    assert names == {0: "car", 1: "person"}
    assert [a.image.name for a in subset] == ["1.jpg", "2.jpg"]  # image 3 holds neither
    assert subset[0].classes.tolist() == [1] and subset[1].classes.tolist() == [0]
    assert [a.image.name for a in load_coco(instances, images, max_images=1)[0]] == ["1.jpg"]
    assert [a.image.name for a in load_coco(instances, images, image_ids=[3])[0]] == ["3.jpg"]


def test_coco_errors(coco, tmp_path):
    instances, images = coco
    with pytest.raises(DatasetError, match="no category 'dragon'"):
        load_coco(instances, images, categories=["dragon"])
    data = json.loads(instances.read_text())
    data["annotations"][0]["bbox"] = [70, 10, 20, 30]
    instances.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"annotation 10 \(image 1\.jpg\): box .* outside the 80x60 image"):
        load_coco(instances, images)
    (images / "2.jpg").unlink()
    with pytest.warns(UserWarning, match="annotation 10"), pytest.raises(DatasetError, match=r"2\.jpg: image file not"):
        load_coco(instances, images, on_error="skip")  # a bad box may be skipped, a missing image may not
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DatasetError, match="malformed JSON"):
        load_coco(broken, images)
    data["images"][2]["id"] = 2  # a duplicate id: its boxes would be scored against the other image
    instances.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image 2: the id is given twice \('2\.jpg' and '3\.jpg'\)"):
        load_coco(instances, images)


def test_val_on_a_split_without_objects_says_so(yolo):
    """COCO metrics of a split without one annotated object are -1 (undefined): said, not printed as scores."""
    from pathlib import Path

    from detr_toolkit import RTDETR

    model = RTDETR(Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors")
    (yolo.parent / "labels" / "train" / "a.txt").unlink()
    yolo.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "names": list(model.names.values())}))
    with pytest.warns(UserWarning, match="its train split has no annotated objects: the metrics are -1"):
        metrics = model.val(yolo, split="train", imgsz=96, verbose=False)["metrics"]
    assert metrics["mAP50-95"] == -1


def test_annotation_table_gives_back_what_it_was_given(tmp_path):
    rng = np.random.default_rng(0)
    boxes = [rng.uniform(0, 40, (i % 3, 4)).astype(np.float32) for i in range(7)]
    annotations = [Annotation(tmp_path / f"bild_{i}_ü.jpg", (40 + i, 60 + i), boxes[i], rng.integers(0, 5, i % 3))
                   for i in range(7)]  # fmt: skip
    table = AnnotationTable.of(annotations)
    assert len(table) == 7 and table.boxes_per_image().tolist() == [0, 1, 2, 0, 1, 2, 0]
    for given, item in zip(annotations, [*table]):
        assert item.image == given.image and item.size == given.size
        assert np.array_equal(item.boxes, given.boxes) and np.array_equal(item.classes, given.classes)
    assert table[-1].image == annotations[-1].image and [a.size for a in table[2:4]] == [(42, 62), (43, 63)]
    with pytest.raises(IndexError):
        table[7]
    table[1].boxes[:] = 0  # an item is a copy: the table is not changed through it
    assert np.array_equal(table[1].boxes, annotations[1].boxes)


def test_coco_images_are_opened_where_they_are_read(coco):
    """Reading the instances file opens no image (COCO train has 118k): a corrupt one is named when it is read."""
    instances, images = coco
    (images / "2.jpg").write_bytes(b"not a jpeg")
    annotations, names = load_coco(instances, images)
    dataset = DetectionDataset(annotations, names, 64)
    assert dataset[0][0].shape == (3, 64, 64)
    with pytest.raises(SourceError, match=r"2\.jpg: not a readable image"):
        dataset[1]


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="reads Linux's /proc")
def test_annotation_table_is_not_copied_into_forked_readers():
    """A forked process (a data-loader worker) that reads every item and collects garbage: a list of Annotation
    objects is copied into it page by page (reference counts are writes), the table is not."""

    def private_mib_after_reading(annotations) -> float:
        def read_all(pipe) -> None:
            before = private_mib()
            for i in range(len(annotations)):
                annotations[i].boxes.sum()
            gc.collect()
            pipe.send(private_mib() - before)

        parent, child = multiprocessing.get_context("fork").Pipe()
        process = multiprocessing.get_context("fork").Process(target=read_all, args=(child,))
        process.start()
        grown = parent.recv()
        process.join()
        return grown

    def many() -> list[Annotation]:
        rng = np.random.default_rng(0)
        return [Annotation(Path(f"images/{i:012d}.jpg"), (480, 640), rng.uniform(0, 400, (7, 4)).astype(np.float32),
                           rng.integers(0, 80, 7)) for i in range(60_000)]  # fmt: skip

    listed = private_mib_after_reading(many())
    table = AnnotationTable.of(many())  # the list is gone, as in a dataset that holds the table alone
    gc.collect()
    tabled = private_mib_after_reading(table)
    nothing = private_mib_after_reading([])  # the collector's pass over the rest of the process (torch, pytest)
    assert listed - nothing > 15 and tabled - nothing < (listed - nothing) / 5, (listed, tabled, nothing)


def private_mib() -> float:
    return process_memory()["uss"]
