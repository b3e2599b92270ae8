"""Writing outputs without losing anything: whole files only (written beside their place, then renamed in one
step), created with the user's usual file mode, under free names when a name is taken, in run folders that do
not stay behind empty when a run fails.

Every failure to write (a read-only folder, a full disk, a name that is a folder) is an `OutputError` naming
the path, in one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

LOCK_FILE = ".lock"  # in a run folder while a training writes into it (run_lock)

INCREMENT_SEPARATOR = "-"  # taken names are numbered name-2, name-3, ..., as ultralytics numbers them


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def user_file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file: 0o666 less the process's umask."""
    return 0o666 & ~_umask()


def user_folder_mode() -> int:
    """The mode a plain `mkdir` would give a new folder: 0o777 less the process's umask."""
    return 0o777 & ~_umask()


def make_dirs(folder: str | Path) -> Path:
    """Create `folder` and its parents; OutputError naming it when that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the folder ({error.strerror or error})") from None
    return folder


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` in one step, so a reader
    (or a run killed mid-write) never sees half a file. The file gets the user's usual mode, not mkstemp's 0600."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, a device (/dev/full), a FIFO: never replaced by a file
        raise OutputError(f"{path}: exists and is not a regular file")
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(fd)
    try:
        yield Path(tmp)  # errors of the writer itself pass through as they are
        try:
            os.chmod(tmp, user_file_mode())
            os.replace(tmp, path)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on success it takes the place of `path` (a folder written
    before goes), so a reader never sees a folder half written or half of two writes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder")
    make_dirs(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        try:
            os.chmod(tmp, user_folder_mode())
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_writable(path: str | Path) -> Path:
    """OutputError now, before any work, if `path` could not be written later: it is a folder or a device, or the
    nearest existing folder above it is not a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: exists and is not a regular file")
    for folder in path.absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"{folder}: cannot create the folder (a file is in the way)")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(f"{folder}: cannot write here (permission denied)")
            break
    return path


def write_file(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write `data` to `path` atomically (see `atomic_file`). Serialise to bytes first and write them here: a full
    disk then fails as an OutputError naming the file, not as an opaque error from inside a library's writer."""
    with atomic_file(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    return Path(path)


def free_path(path: str | Path, taken: set[Path] | None = None) -> Path:
    """`path` if no file has that name (and it is not in `taken`), else `stem-2.ext`, `stem-3.ext`, ..."""
    path = Path(path)
    candidate, n = path, 2
    while candidate.exists() or (taken is not None and candidate in taken):
        candidate, n = path.with_name(f"{path.stem}{INCREMENT_SEPARATOR}{n}{path.suffix}"), n + 1
    return candidate


def increment_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """project/name, or the first free of name-2, name-3, ... (project/name itself when `exist_ok`); created."""
    base = Path(project) / name
    path, n = base, 2
    while path.exists() and not exist_ok:
        path, n = base.with_name(f"{name}{INCREMENT_SEPARATOR}{n}"), n + 1
    return make_dirs(path)


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of the run folder `folder` meanwhile: a second training into it (exist_ok=True, a resume
    while the run goes on) fails with one line instead of interleaving its files with this one's. An OS lock
    (flock on folder/.lock): the system releases it however the process ends. Where flock does not exist
    (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = folder / LOCK_FILE
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{folder}: another training is writing into this run folder (wait for it, or give "
                              "another name=)") from None  # fmt: skip
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_partial_files(folder: Path) -> None:
    """Delete the temporary files (`.<name>.<random>.tmp`) that atomic writes killed mid-way left in a run folder
    and its weights/. Only where no one writes (under run_lock): another writer's file would go too."""
    for partial in [*folder.glob(".*.tmp"), *folder.glob("weights/.*.tmp")]:
        partial.unlink(missing_ok=True)


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (the first one `make_dirs(path)` would create)."""
    path = Path(path).absolute()
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def remove_if_unused(folder: Path, keep_if_present: str | None = None, made_from: Path | None = None) -> None:
    """Remove a run folder a failed run made: when it is empty, or when it lacks `keep_if_present` (the file that
    would make it worth keeping, e.g. a resumable checkpoint). Then the empty folders above it, up to `made_from`
    (the outermost one the run created: `runs/` of a first run), go too."""
    if not folder.is_dir():
        return
    if not any(folder.iterdir()) or (keep_if_present is not None and not (folder / keep_if_present).exists()):
        shutil.rmtree(folder, ignore_errors=True)
    if made_from is None:
        return
    made_from = made_from.absolute()
    for parent in folder.absolute().parents:
        if made_from not in (parent, *parent.parents) or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()
