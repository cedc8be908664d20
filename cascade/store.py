"""Results keyed by a content hash of the complete run configuration.

Layout: ``<root>/<profile>/<experiment>/<hash>.json`` (small, diffable, committed for the paper
profile) and checkpoints in ``<cache>/ckpt/<experiment>/<hash>/`` (never committed). The hash is
over the canonical JSON of the config *and* the experiment's version, so bumping a version makes
every old record stale instead of silently reused. A record also stores its config, and a lookup
checks it, so even a hash collision cannot return another config's numbers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]


def canonical(obj: Any) -> Any:
    """Plain JSON-able form of dataclasses, tuples and paths, with sorted keys, for hashing and storing."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot hash a config value of type {type(obj).__name__}: {obj!r}")


def config_hash(config: Any, version: int | str) -> str:
    """12 hex digits of sha256 over the canonical config plus the experiment version."""
    text = json.dumps({"config": canonical(config), "version": version}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; records are shared and committed
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def default_root() -> Path:
    return Path(os.environ.get("CASCADE_RESULTS", REPO / "results"))


def default_cache() -> Path:
    return Path(os.environ.get("CASCADE_CACHE", REPO / ".cache"))


class Store:
    """Run records of one profile: get/put by config, status over a set of configs."""

    def __init__(self, profile: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
        self.profile = profile
        self.root = Path(root) if root is not None else default_root()
        self.cache = Path(cache) if cache is not None else default_cache()

    def path(self, experiment: str, key: str) -> Path:
        return self.root / self.profile / experiment / f"{key}.json"

    def checkpoint_dir(self, experiment: str, key: str) -> Path:
        return self.cache / "ckpt" / experiment / key

    def get(self, experiment: str, config: Any, version: int | str) -> dict | None:
        """The stored record for exactly this config, or None."""
        path = self.path(experiment, config_hash(config, version))
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if record.get("config") != canonical(config) or record.get("version") != version:
            return None
        return record

    def put(self, experiment: str, config: Any, version: int | str, result: dict, meta: dict | None = None) -> dict:
        key = config_hash(config, version)
        record = {"key": key, "experiment": experiment, "version": version, "profile": self.profile,
                  "config": canonical(config), "meta": meta or {}, "result": result}
        atomic_write_text(self.path(experiment, key), json.dumps(record, indent=1, sort_keys=True) + "\n")
        return record

    def status(self, experiment: str, configs: Iterable[Any], version: int | str) -> dict:
        """Which of `configs` are done and missing, and which stored records no config produces (stale)."""
        keys = {config_hash(c, version): c for c in configs}
        folder = self.root / self.profile / experiment
        stored = {p.stem for p in folder.glob("*.json")} if folder.exists() else set()
        done = [k for k in keys if k in stored and self.get(experiment, keys[k], version) is not None]
        return {"done": done, "missing": [k for k in keys if k not in done], "stale": sorted(stored - set(keys))}
