"""Results keyed by a content hash of the complete run configuration.

Layout: ``<root>/<profile>/<kind>/<hash>.json`` (small, diffable, committed for the paper
profile) and checkpoints in ``<cache>/ckpt/<kind>/<hash>/`` (never committed). The hash is
over the canonical JSON of the config *and* its kind's version, so bumping a version makes
every old record stale instead of silently reused. A record also stores its config, and a lookup
checks it, so even a hash collision cannot return another config's numbers.

The canonical form leaves out every dataclass field equal to its default. So a field added later with a
default that changes nothing keeps every existing key: the schema can grow without recomputing the store.
A field declared as a base class (a two-model evaluation takes any `Run`) holds a subclass instance; its
canonical form then carries the subclass's `kind`, by which `from_canonical` finds the subclass again.
`from_canonical` rebuilds the config from a record (filling in defaults); `migrate` moves records made
under an older canonical form to their current keys without recomputing anything.

Integrity: every record carries `digest`, a sha256 over the rest of its content, and `get` checks it, the
record's config, and the fields its kind's analysis reads (`Run.schema`: dotted path -> type). A record that fails
is `CorruptRecord`, a one-line error naming its file: never used, listed by `status`, recomputed by `run`.
Non-finite floats are written as null, so every record is valid JSON.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def canonical(obj: Any) -> Any:
    """Plain JSON-able form of dataclasses, tuples and paths, with sorted keys and without the dataclass fields
    that equal their defaults, for hashing and storing."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = _hints(type(obj))
        obj = {f.name: _tagged(getattr(obj, f.name), hints[f.name]) for f in dataclasses.fields(obj)
               if not _same(canonical(getattr(obj, f.name)), _canonical_default(f))}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot hash a config value of type {type(obj).__name__}: {obj!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _tagged(value: Any, hint: Any) -> Any:
    """`value`, with its `kind` beside it when the field is declared as a base class of the value's class."""
    if (dataclasses.is_dataclass(value) and isinstance(hint, type) and type(value) is not hint
            and hasattr(value, "kind")):
        return {"kind": value.kind, **canonical(value)}
    return value


def _subclass(base: type, kind: str) -> type:
    """The subclass of `base` whose `kind` is `kind` (the classes must be imported, i.e. registered)."""
    found, todo = [], [base]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found += [cls] if getattr(cls, "kind", None) == kind and dataclasses.is_dataclass(cls) else []
    if len(found) != 1:
        raise ValueError(f"kind {kind!r} names {len(found)} subclasses of {base.__name__}; allowed: exactly one")
    return found[0]


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON text: True and 1, or 1 and 1.0, are different values here, as in the hash."""
    return b is not dataclasses.MISSING and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _canonical_default(f: dataclasses.Field) -> Any:
    default = _default(f)
    return default if default is dataclasses.MISSING else canonical(default)


def from_canonical(cls: type, value: Any) -> Any:
    """Rebuild an instance of `cls` (a dataclass, or a field type inside one) from its canonical form.

    Missing dataclass fields take their defaults; an unknown field is an error, as it would be silently lost.
    """
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return from_canonical(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        return tuple(from_canonical(args[0], v) for v in value)
    if isinstance(cls, type) and not dataclasses.is_dataclass(cls) and isinstance(value, dict) and "kind" in value:
        value = dict(value)
        cls = _subclass(cls, value.pop("kind"))
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"field(s) {', '.join(unknown)} unknown to {cls.__name__}; allowed: "
                             f"{', '.join(sorted(fields))}")
        return cls(**{k: from_canonical(hints[k], v) for k, v in value.items()})
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_hash(config: Any, version: int | str) -> str:
    """12 hex digits of sha256 over the canonical config plus the run kind's version."""
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


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # what a profile or kind may be called: a folder, not a path


class CorruptRecord(ValueError):
    """A stored record that is not valid JSON, whose digest does not match, or that lacks a field its kind reads."""


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def digest(record: dict) -> str:
    """sha256 (16 hex digits) over a record's content without its `digest`."""
    text = json.dumps({k: v for k, v in record.items() if k != "digest"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


TYPES = {float: (numbers.Real,), int: (numbers.Integral,), list: (list,), dict: (dict,), str: (str,)}


def schema_errors(record: dict, schema: dict[str, type]) -> list[str]:
    """What `record` lacks of `schema` (dotted paths under `result` -> type; a float may be stored as an int)."""
    out = []
    for path, kind in {"key": str, "version": int, "config": dict, "meta": dict, "result": dict,
                       **{f"result.{k}": v for k, v in schema.items()}}.items():
        value = record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            out.append(f"no {path}")
        elif not isinstance(value, TYPES[kind]) or isinstance(value, bool):
            out.append(f"{path} is a {type(value).__name__}, not a {kind.__name__}")
    return out


def read_record(path: Path, schema: dict[str, type] | None = None) -> dict:
    """The record at `path`, checked (valid JSON, its digest, `schema`); CorruptRecord names the file otherwise."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRecord(f"record {path} is not valid JSON ({e}); it is never used, and `run` recomputes it") \
            from None
    if not isinstance(record, dict):
        raise CorruptRecord(f"record {path} is not a JSON object; it is never used, and `run` recomputes it")
    if record.get("digest") != digest(record):
        why = "has no digest (run `cascade migrate`)" if "digest" not in record else "does not match its digest " \
              "(edited by hand?)"
        raise CorruptRecord(f"record {path} {why}; it is never used, and `run` recomputes it")
    problems = schema_errors(record, schema or {})
    if problems:
        raise CorruptRecord(f"record {path} fails its schema ({'; '.join(problems)}); it is never used, and `run` "
                            "recomputes it")
    return record


def check_name(value: str, what: str) -> str:
    """`value` if it can name a folder of the store (no separator, no '..'); else a one-line error."""
    if not isinstance(value, str) or not NAME.match(value):
        raise ValueError(f"{what}={value!r} is invalid; allowed: letters, digits, '-' and '_' (a folder name)")
    return value


class Store:
    """Run records of one profile, addressed by the run itself (its `kind`, `version` and config hash)."""

    def __init__(self, profile: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
        self.profile = check_name(profile, "profile")
        self.root = Path(root) if root is not None else default_root()
        self.cache = Path(cache) if cache is not None else default_cache()

    def folder(self, kind: str) -> Path:
        """Where the records of run kind `kind` live."""
        return self.root / self.profile / check_name(kind, "kind")

    def path(self, run: Any) -> Path:
        return self.folder(run.kind) / f"{key(run)}.json"

    def checkpoint_dir(self, run: Any) -> Path:
        return self.cache / "ckpt" / check_name(run.kind, "kind") / key(run)

    def get(self, run: Any) -> dict | None:
        """The stored record of exactly this run (config and version), or None; CorruptRecord (naming the file)
        when it is stored but fails its checks."""
        path = self.path(run)
        if not path.exists():
            return None
        record = read_record(path, getattr(run, "schema", None))
        if record.get("config") != canonical(run) or record.get("version") != run.version:
            return None
        return record

    def put(self, run: Any, result: dict, meta: dict | None = None) -> dict:
        """Write the record of `run` atomically (replacing any older one) and return it."""
        record = _finite({"key": key(run), "experiment": run.kind, "version": run.version, "profile": self.profile,
                          "config": canonical(run), "meta": meta or {}, "result": result})
        record["digest"] = digest(record)
        atomic_write_text(self.path(run), json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
        return record

    def keys(self, kind: str) -> set[str]:
        """The keys of every record stored for `kind`, current or not."""
        folder = self.folder(kind)
        return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()


def key(run: Any) -> str:
    """A run's key in the store: the hash of its config and its kind's version."""
    return config_hash(run, run.version)


def migrate(root: str | os.PathLike, profile: str, kinds: dict[str, type]) -> dict[str, str]:
    """Move the records of `profile` under `root` to the keys of the current canonical form, and sign those without
    a digest; {old: new} for each record moved or signed. Nothing is recomputed.

    Each record's config is rebuilt with `kinds[kind]` and re-keyed; the record is rewritten (new file first, then
    the old one removed) with only its key, config and digest changed. Records of another version, or whose config no
    longer fits its class, are left where they are (`status` reports them as stale); a record that is not valid
    JSON, fails its schema, or whose digest does not match is left as it is (`run` recomputes it).
    """
    moved = {}
    for kind, cls in kinds.items():
        folder = Path(root) / check_name(profile, "profile") / kind
        for path in sorted(folder.glob("*.json")) if folder.exists() else ():
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(record, dict) or record.get("version") != cls.version:
                continue
            if ("digest" in record and record["digest"] != digest(record)) or \
                    schema_errors(record, getattr(cls, "schema", {})):
                continue
            try:
                run = from_canonical(cls, record["config"])
            except (TypeError, ValueError):
                continue
            key = config_hash(run, cls.version)
            if key == path.stem and record["config"] == canonical(run) and "digest" in record:
                continue
            record.update(key=key, config=canonical(run))
            record["digest"] = digest(record)
            atomic_write_text(path.with_name(f"{key}.json"), json.dumps(record, indent=1, sort_keys=True) + "\n")
            if key != path.stem:
                path.unlink()
            moved[path.stem] = key
    return moved
