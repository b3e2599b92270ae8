"""Outputs: every source keeps its files, formats OpenCV cannot write fall back or are named, unwritable places
and full disks give one line with nothing half-written and no empty run folder, files get the user's usual mode,
and errors inside data-loader workers name their file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest
from conftest import ASSETS, PHOTOS

from detr_toolkit import RTDETR
from detr_toolkit.cli import main
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.errors import OutputError

DEMO = ASSETS / "rtdetr-tiny-shapes.safetensors"


def usual_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_sources_with_the_same_name_keep_their_outputs(tmp_path):
    """a/bus.jpg and b/bus.jpg (different pictures): bus.jpg and bus-2.jpg, with labels to match."""
    for folder, photo in (("a", PHOTOS[0]), ("b", PHOTOS[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / "bus.jpg")
    assert main(["predict", str(tmp_path / "*" / "bus.jpg"), "--model", str(DEMO), "conf=0", "max_det=2", "--save",
                 "--save-txt", f"project={tmp_path / 'runs'}"]) == 0  # fmt: skip
    run = tmp_path / "runs" / "predict"
    assert sorted(p.name for p in run.glob("*.jpg")) == ["bus-2.jpg", "bus.jpg"]
    assert sorted(p.name for p in (run / "labels").glob("*.txt")) == ["bus-2.txt", "bus.txt"]
    assert cv2.imread(str(run / "bus.jpg")).shape != cv2.imread(str(run / "bus-2.jpg")).shape
    assert all(len(p.read_text().splitlines()) == 2 for p in (run / "labels").glob("*.txt"))


def test_formats_opencv_cannot_write(tmp_path):
    """A source whose format OpenCV reads but cannot write is saved as .jpg; asking for such a file is an error."""
    shutil.copy(ASSETS / "shapes.jpg", tmp_path / "shapes.mpo")  # MPO: JPEG-based, read but not written by OpenCV
    result = RTDETR(DEMO).predict(tmp_path / "shapes.mpo", save=True, project=tmp_path / "runs", verbose=False)[0]
    assert (tmp_path / "runs" / "predict" / "shapes.jpg").is_file() and result.save_dir
    with pytest.raises(OutputError, match=r"out\.xyz: cannot write images of this format"):
        result.save(tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_unwritable_places_are_one_line_and_leave_nothing(tmp_path, capsys):
    """A project below a file (unwritable for anyone, root included), an export next to it: one line, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = sorted(tmp_path.rglob("*"))
    assert main(["predict", str(PHOTOS[0]), "--model", str(DEMO), "--save", f"project={blocker / 'runs'}"]) == 2
    assert main(["export", "--model", str(DEMO), f"file={blocker / 'model.onnx'}"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(
        line.startswith("error: ") and "cannot create the folder" in line for line in errors
    )
    assert sorted(tmp_path.rglob("*")) == before


def test_no_empty_run_folder_when_predict_fails(tmp_path):
    assert main(["predict", str(tmp_path / "absent.jpg"), "--model", str(DEMO), "--save", f"project={tmp_path}"]) == 2
    assert not (tmp_path / "predict").exists()


FULL_DISK = """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit then fails as a full disk does
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    from detr_toolkit.cli import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "train"])
def test_a_full_disk_is_one_line_and_leaves_the_last_whole_file(tmp_path, command):
    """Writes fail with EFBIG under RLIMIT_FSIZE, as with ENOSPC on a full disk: exit 2, one line naming the file,
    no temporary file left, and (training) no run folder without a checkpoint."""
    script = tmp_path / "full_disk.py"
    script.write_text(textwrap.dedent(FULL_DISK))
    if command == "export":
        args = ["export", "--model", str(DEMO), f"file={tmp_path / 'out' / 'model.onnx'}"]
    else:
        data = make_synthetic(tmp_path / "shapes", train=4, val=2, size=64, max_objects=2)
        args = ["train", "--model", "rtdetr-tiny.yaml", "--data", str(data), "epochs=1", "batch=2", "imgsz=64",
                "plots=false", "verbose=false", f"project={tmp_path / 'runs'}"]  # fmt: skip
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "File too large" in run.stderr
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers and not (tmp_path / "out" / "model.onnx").exists()
    assert not (tmp_path / "runs" / "exp").exists()


@pytest.mark.slow
def test_outputs_get_the_users_file_mode(tmp_path):
    model = RTDETR(DEMO)
    files = [
        model.save(tmp_path / "weights.safetensors"),
        model.predict(ASSETS / "shapes.jpg", verbose=False)[0].save(tmp_path / "plotted.jpg"),
        model.export(file=tmp_path / "model.onnx"),
    ]
    for file in files:
        assert stat.S_IMODE(os.stat(file).st_mode) == usual_mode(), file


def test_errors_in_data_loader_workers_name_their_file(tmp_path, capsys):
    """A training image that passes the header check but cannot be decoded, read in a worker process: the run
    stops with one line naming the file (not the worker's traceback) and leaves no run folder."""
    data = make_synthetic(tmp_path / "shapes", train=4, val=2, size=64, max_objects=2)
    victim = min((tmp_path / "shapes" / "images" / "train").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:200])  # a valid header, then nothing
    code = main(["train", "--model", "rtdetr-tiny.yaml", "--data", str(data), "epochs=1", "batch=2", "imgsz=64",
                 "workers=1", "plots=false", f"project={tmp_path / 'runs'}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err], err
    assert victim.name in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "exp").exists()


def test_crops_stay_inside_their_folder_whatever_the_class_names(tmp_path):
    """Class names come from checkpoints: '../../outside' must not lead a crop out of the save folder."""
    import torch

    from detr_toolkit import Results

    image = cv2.imread(str(PHOTOS[0]))
    result = Results(image, "bus.jpg", {0: "../../outside", 1: "a/b"},
                     torch.tensor([[10.0, 10, 50, 50, 0.9, 0],
                                   [5, 5, 40, 40, 0.8, 1]]))  # fmt: skip
    written = result.save_crop(tmp_path / "crops" / "inner")
    assert len(written) == 2
    assert all((tmp_path / "crops" / "inner").resolve() in Path(p).resolve().parents for p in written)
