"""Hostile and careless data: images that promise gigabytes, numeric images of every range and depth, YAML that
expands without end, globs through looping links, malformed label files and COCO records, and COCO files whose
records disagree with their images. Each gives the right result or one error naming the thing, in bounded time."""

from __future__ import annotations

import json
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import ASSETS

from detr_toolkit import RTDETR
from detr_toolkit.cli import main
from detr_toolkit.data.coco import load_coco
from detr_toolkit.data.images import read_image
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.data.yolo import load_yolo
from detr_toolkit.errors import ConfigError, DatasetError, LimitError


@pytest.fixture(scope="module")
def demo() -> RTDETR:
    return RTDETR(ASSETS / "rtdetr-tiny-shapes.safetensors")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pixel_bomb(path, width=100_000, height=100_000) -> None:
    """A PNG of a few hundred bytes whose header promises width x height pixels (30 GB decoded)."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + body + _png_chunk(b"IEND", b""))


def test_an_image_promising_gigabytes_is_refused_before_decoding(tmp_path, demo, capsys):
    bomb = tmp_path / "bomb.png"
    pixel_bomb(bomb)
    assert bomb.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(LimitError, match=r"bomb\.png: a 100000x100000 image: 10,000,000,000 pixels.*MAX_IMAGE_PIXELS"):
        read_image(bomb)
    assert main(["predict", str(bomb), "--model", str(ASSETS / "rtdetr-tiny-shapes.safetensors")]) == 2
    assert "10,000,000,000 pixels, above the limit" in capsys.readouterr().err
    assert time.perf_counter() - start < 20
    # in a dataset, the header is read when the dataset loads
    (tmp_path / "images").mkdir()
    bomb.rename(tmp_path / "images" / "bomb.png")
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"train": "images", "names": ["a"]}))
    with pytest.raises(LimitError, match="bomb.png"):
        load_yolo(data, "train")


def test_the_pixel_limit_can_be_raised(tmp_path, monkeypatch):
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), np.zeros((10, 400, 3), np.uint8))
    monkeypatch.setenv("DETR_TOOLKIT_MAX_IMAGE_PIXELS", "3000")
    with pytest.raises(LimitError, match="4,000 pixels, above the limit of 3,000"):
        read_image(image)
    monkeypatch.setenv("DETR_TOOLKIT_MAX_IMAGE_PIXELS", "4000")
    assert read_image(image).shape == (10, 400, 3)


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """One 8-bit BGR image in the numeric forms users hold it in."""
    wide = image.astype(np.uint16)
    return {
        "float 0..255": image.astype(np.float32),
        "float 0..1": image.astype(np.float64) / 255,
        "16-bit holding 8-bit values": wide,
        "12-bit": wide << 4,
        "16-bit full range": wide * 257,
        "int32": image.astype(np.int32),
    }


def test_numeric_images_of_any_range_and_depth_detect_as_their_8_bit_original(demo, tmp_path):
    image = cv2.imread(str(ASSETS / "shapes.jpg"))
    expected = demo.predict(image, conf=0.5, verbose=False)[0].boxes.data
    assert len(expected) > 0
    for name, variant in _variants(image).items():
        found = demo.predict(variant, conf=0.5, verbose=False)[0].boxes.data
        assert torch.allclose(found, expected, atol=1.0), name
        if variant.dtype == np.uint16:  # and as a 16-bit PNG file
            path = tmp_path / f"{name}.png"
            cv2.imwrite(str(path), variant)
            assert torch.allclose(demo.predict(path, conf=0.5, verbose=False)[0].boxes.data, expected, atol=1.0), name


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh")),
            r"YAML nodes, aliases expanded, above the limit of 1,000,000 \(set DETR_TOOLKIT_MAX_YAML_NODES",
        ),
        ("a: &a [*a]\n", "a YAML anchor contains itself"),
        ("a: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply|malformed YAML"),
        ("\xff\xfe\x00garbage", "malformed YAML|not a UTF-8 text file"),
    ],
    ids=["billion-laughs", "self-reference", "deep", "binary"],
)
def test_yaml_that_expands_without_end_is_refused(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if "garbage" not in text else b"\xff\xfe\x00garbage")
    start = time.perf_counter()
    with pytest.raises((ConfigError, LimitError), match=message):
        load_yolo(path, "train")
    assert time.perf_counter() - start < 10


def test_a_glob_through_looping_links_ends(tmp_path, demo):
    """a/b/up -> a and a/b/up2 -> the root: `**` would walk them forever; each real folder is walked once."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    image = cv2.imread(str(ASSETS / "shapes.jpg"))
    cv2.imwrite(str(tmp_path / "a" / "one.jpg"), image)
    cv2.imwrite(str(tmp_path / "a" / "b" / "two.jpg"), image)
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "b" / "up2").symlink_to(tmp_path)
    start = time.perf_counter()
    results = demo.predict(str(tmp_path / "**" / "*.jpg"), verbose=False)
    assert sorted(r.path.rsplit("/", 1)[-1] for r in results) == ["one.jpg", "two.jpg"]
    assert time.perf_counter() - start < 20


@pytest.fixture
def yolo(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((60, 80, 3), 127, np.uint8))
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"train": "images", "names": ["cat", "dog"]}))
    return data


@pytest.mark.parametrize(
    "content, outcome",
    [
        ("0 0.5 0.5 0.25 0.5\n".encode("utf-16"), [[30, 15, 50, 45]]),  # UTF-16 with its BOM: read as text
        ("\ufeff0 0.5 0.5 0.25 0.5\n".encode(), [[30, 15, 50, 45]]),  # UTF-8 with a BOM
        (b"1.0 0.5 0.5 0.25 0.5\n", [[30, 15, 50, 45]]),  # a class written as a float
        (b"0 0.25 0.25 0.75 0.25 0.5 0.75\n", [[20, 15, 60, 45]]),  # a polygon (segmentation label): its box
        (b"\x00\x01\x02\x03\xff\xfe\xfd" * 10, r"a\.txt: not a text file"),
        (b"0 0.5 0.5 0.25 0.5 0.9\n", r"a\.txt:1: malformed label line .* got 6 values"),
        (b"0 nan 0.5 0.25 0.5\n", r"a\.txt:1: malformed label line .*not a finite number"),
        (b"0.5 0.5 0.5 0.25 0.5\n", r"a\.txt:1: malformed label line .*class 0\.5 is not an integer"),
    ],
    ids=["utf16", "utf8-bom", "float-class", "polygon", "binary", "six-values", "nan", "fractional-class"],
)
def test_label_files_of_every_kind(yolo, content, outcome):
    (yolo.parent / "labels" / "a.txt").write_bytes(content)
    if isinstance(outcome, str):
        with pytest.raises(DatasetError, match=outcome):
            load_yolo(yolo, "train")
    else:
        annotations, _ = load_yolo(yolo, "train")
        np.testing.assert_allclose(annotations[0].boxes, outcome)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"train": "nowhere", "names": ["a"]}, "neither a folder nor a list file"),
        ({"train": "images", "names": {"a": "cat"}}, r"names must name exactly the classes 0\.\.0, got keys \['a'\]"),
        ({"train": "images", "names": {0: "cat", 2: "dog"}}, r"names must name exactly the classes 0\.\.1"),
        ({"train": "images", "names": {0.0: "cat", 1.5: "dog"}}, r"names must name exactly the classes 0\.\.1"),
        ({"train": "images"}, "needs `names`"),
        ({"train": "list.txt", "names": ["a"]}, r"list\.txt: not a text file"),
    ],
)
def test_data_yaml_pointing_at_nothing_or_malformed(yolo, spec, message):
    (yolo.parent / "list.txt").write_bytes(b"\x00\xff\x00\xfe")
    yolo.write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match=message):
        load_yolo(yolo, "train")


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    make_synthetic(root, train=2, val=6, size=96, max_objects=3, seed=4)
    return root / "annotations" / "instances_val.json", root / "images" / "val"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["images"][0].pop("file_name"), r"image 0: 'file_name' missing or not a text"),
        (lambda d: d["images"][1].update(height="96"), r"image 1: 'height' missing or not an integer"),
        (lambda d: d["annotations"][0].pop("image_id"), r"annotation 1: 'image_id' missing"),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"annotation 1 \(image val_00000\.jpg\): 'bbox' must be",
        ),
        (lambda d: d["annotations"][0].update(category_id=99), "category_id 99 is not among the categories"),
        (lambda d: d["categories"][0].pop("name"), r"category 0: 'name' missing"),
        (lambda d: d["annotations"].append("text"), r"annotation \d+: not an object"),
    ],
    ids=["file_name", "height", "image_id", "bbox", "category", "category-name", "not-an-object"],
)
def test_coco_records_missing_or_malformed_fields_are_named(coco, edit, message):
    instances, images = coco
    data = json.loads(instances.read_text())
    edit(data)
    instances.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        load_coco(instances, images)


def test_coco_records_that_disagree_with_the_files_lose_nothing(coco, tmp_path, demo):
    """Recorded sizes half the files' (the images were enlarged after labelling) and annotations of an image id
    without a record: the orphans are counted when the file is read; the sizes are found where the images are
    read, once said, the boxes scaled to the files, and the demo model scores the same mAP as on the truthful file
    (a silently mismatched one scored 0)."""
    instances, images = coco
    truthful = demo.val(instances, images=str(images), verbose=False)["metrics"]
    assert truthful["mAP50"] > 0.5
    data = json.loads(instances.read_text())
    for record in data["images"]:
        record["height"], record["width"] = record["height"] // 2, record["width"] // 2
    for annotation in data["annotations"]:
        annotation["bbox"] = [v / 2 for v in annotation["bbox"]]
    data["annotations"].append({"id": 999, "image_id": 12345, "category_id": 0, "bbox": [1, 1, 5, 5]})
    halved = tmp_path / "halved.json"
    halved.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="1 annotation.s. of image ids without an image record"):
        annotations, _ = load_coco(halved, images)
    assert all(a.size == (48, 48) for a in annotations)  # as recorded: no image was opened
    with pytest.warns(UserWarning) as warned:
        scaled = demo.val(halved, images=str(images), verbose=False)["metrics"]
    told = [str(w.message) for w in warned if "its record says 48x48: boxes scaled to the file" in str(w.message)]
    assert len(told) == 1 and "the image is 96x96" in told[0]
    assert scaled["mAP50-95"] == pytest.approx(truthful["mAP50-95"], abs=0.01)


def test_subset_settings_in_a_data_yaml_are_validated(coco, tmp_path):
    instances, images = coco
    data = tmp_path / "coco.yaml"
    data.write_text(yaml.safe_dump({"format": "coco", "val": {"instances": str(instances), "images": str(images)},
                                    "max_images": -1}))  # fmt: skip
    with pytest.raises(DatasetError, match=r"coco\.yaml: max_images=-1: must be at least 1"):
        RTDETR(ASSETS / "rtdetr-tiny-shapes.safetensors").val(data, verbose=False)
