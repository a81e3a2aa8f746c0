"""The results store: one JSON file per cell, written atomically and never overwritten.

Layout: ``<root>/<dataset>/<method>/eps<E>_seed<S>_<hash8>.json`` for finished runs and
``...<hash8>.failed.json`` for the last failed attempt (removed when the cell succeeds).
A finished file is created with ``os.link`` from a complete temporary file, so a crash or a
concurrent writer never leaves a partial or corrupt file, and an existing result is never
replaced: the second of two concurrent writers keeps the first one's file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .cells import cell_stem, config_hash


class StoreError(OSError):
    """The results directory cannot be written (read-only, full disk, ...)."""


class CorruptResult(StoreError):
    """A result file exists but cannot be read; it is never overwritten silently."""


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def dumps(result: dict) -> str:
    return json.dumps(result, indent=1, sort_keys=True, default=_json_default, allow_nan=False) + "\n"


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def cell_dir(self, config: dict) -> Path:
        return self.root / config["dataset"] / config["method"]

    def path_for(self, config: dict) -> Path:
        return self.cell_dir(config) / f"{cell_stem(config)}.json"

    def failed_path_for(self, config: dict) -> Path:
        return self.cell_dir(config) / f"{cell_stem(config)}.failed.json"

    def artifacts_dir(self, config: dict) -> Path:
        return self.cell_dir(config) / "artifacts" / cell_stem(config)

    def is_done(self, config: dict) -> bool:
        path = self.path_for(config)
        if not path.exists():
            return False
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return result.get("status") == "ok" and result.get("config_hash") == config_hash(config)

    def check_not_corrupt(self, config: dict) -> None:
        path = self.path_for(config)
        if path.exists():
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise CorruptResult(f"result file {path} is corrupt ({exc.__class__.__name__}); "
                                    f"move it away to recompute the cell") from None

    def check_writable(self, config: dict) -> None:
        """Fail before any work if the cell's result could not be written."""
        directory = self.cell_dir(config)
        self._mkdir(directory)
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise StoreError(f"cannot write results to {directory}: {reason}") from None

    def read(self, config: dict, failed: bool = False) -> dict | None:
        path = self.failed_path_for(config) if failed else self.path_for(config)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _mkdir(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create results directory {directory}: {exc.strerror}") from None

    def write(self, result: dict) -> Path:
        """Write a result atomically. ok results are never replaced; returns the path that holds the cell."""
        config = result["config"]
        final = self.path_for(config) if result["status"] == "ok" else self.failed_path_for(config)
        self._mkdir(final.parent)
        text = dumps(result)
        try:
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                if result["status"] == "ok":
                    try:
                        os.link(tmp, final)  # fails if the file exists: never overwrite a finished result
                    except FileExistsError:
                        return final
                    failed = self.failed_path_for(config)
                    if failed.exists():
                        failed.unlink()
                else:
                    os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise StoreError(f"cannot write result to {final.parent}: {reason}") from None
        return final

    @contextmanager
    def running(self, config: dict):
        """Hold the cell's lock while it runs; yields False if another process is running it."""
        path = self.cell_dir(config) / f".{cell_stem(config)}.lock"
        self._mkdir(path.parent)
        with open(path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                lock.seek(0)
                lock.truncate()
                lock.write(f"{os.getpid()}\n")
                lock.flush()
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def is_running(self, config: dict) -> bool:
        path = self.cell_dir(config) / f".{cell_stem(config)}.lock"
        if not path.exists():
            return False
        with open(path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
        return False
