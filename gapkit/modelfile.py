"""The one container of gapkit's model files: ``.gkm`` detectors and ``.gka`` label adapters.

A model file is a zip of two members: ``meta.json`` (a JSON object that names its ``kind`` and
``file_version``, with the gapkit version that wrote it and what the model needs) and
``weights.npz`` (plain numpy arrays, read with ``allow_pickle=False``, never a pickle). Where
the meta holds ``weights_sha256``, the weights must match it. Reading refuses a missing file,
a foreign zip, a file of the other kind and a version this gapkit does not read, each with an
error that names the file. Writing is atomic (:func:`gapkit.files.atomic_open`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from gapkit.errors import AdapterError, GapkitError, InputError, ModelError
from gapkit.files import atomic_open

META = "meta.json"
WEIGHTS = "weights.npz"
DIGEST_KEY = "weights_sha256"


@dataclass(frozen=True)
class FileKind:
    """One kind of model file: what its meta says, what messages call it, how it is written."""

    kind: str  # meta.json "kind"
    version: int  # meta.json "file_version" this gapkit reads and writes
    noun: str  # the file in messages: "a gapkit {noun} file"
    error: type[GapkitError]
    compression: int = zipfile.ZIP_DEFLATED
    require_digest: bool = False  # refuse a file whose meta holds no weights digest


DETECTOR = FileKind("gapkit-detector", 1, "model", ModelError, zipfile.ZIP_STORED, require_digest=True)
ADAPTER = FileKind("gapkit-label-adapter", 1, "adapter", AdapterError, zipfile.ZIP_DEFLATED)
KINDS = {k.kind: k for k in (DETECTOR, ADAPTER)}


@dataclass
class ModelFile:
    """A model file as read: its path, its kind, its meta (a dict) and its weights (npz bytes)."""

    path: Path
    kind: FileKind
    meta: dict
    weights: bytes

    def meta_as(self, model: type[BaseModel]) -> BaseModel:
        """The meta validated as ``model``; a meta that does not fit it is the kind's error."""
        try:
            return model(**self.meta)
        except Exception as exc:  # a ValidationError, or whatever a validator raised
            raise self.kind.error(f"{self.path}: meta.json does not describe a {self.kind.noun} ({exc})") from None

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights as plain arrays. Raises ValueError on a pickle or a broken npz."""
        return unpack_arrays(self.weights)


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """``weights.npz`` bytes of named arrays."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Named arrays from ``weights.npz`` bytes, never unpickling: a pickle or a broken npz raises
    ValueError."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("weights.npz holds one array, not named arrays")
        with npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"broken weights.npz ({exc})") from None


def weights_digest(data: bytes) -> str:
    """sha256 hex digest of the weights member, as ``meta.json`` stores it."""
    return hashlib.sha256(data).hexdigest()


def write_model_file(path: str | Path, kind: FileKind, meta: dict | BaseModel, weights: bytes,
                     overwrite: bool = False) -> Path:
    """Write ``meta`` and ``weights`` (npz bytes) as one ``kind`` file, atomically. A dict meta is
    written as ``json.dumps(meta, indent=1)`` with the weights' digest added, a pydantic one as
    ``model_dump_json(indent=1)`` (it holds the digest itself)."""
    if isinstance(meta, dict):  # a model's meta carries its own digest field
        meta = {**meta, DIGEST_KEY: weights_digest(weights)}
    text = meta.model_dump_json(indent=1) if isinstance(meta, BaseModel) else json.dumps(meta, indent=1)
    head = json.loads(text)
    if head.get("kind") != kind.kind or head.get("file_version") != kind.version:
        raise ValueError(f"meta of kind {head.get('kind')!r} v{head.get('file_version')!r} written as {kind.kind!r}")
    if kind.require_digest and head.get(DIGEST_KEY) != weights_digest(weights):
        raise ValueError(f"a {kind.noun} file's meta must hold the digest of its weights")
    with atomic_open(path, "wb", overwrite=overwrite) as f, zipfile.ZipFile(f, "w", kind.compression) as z:
        z.writestr(META, text)
        z.writestr(WEIGHTS, weights)
    return Path(path)


def read_model_file(path: str | Path, kind: FileKind) -> ModelFile:
    """Read and check a ``kind`` file: it exists, is a zip with both members and a JSON object
    meta, is of this kind and version, and its weights match their digest where one is stored
    (always, for a kind that requires one)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such {kind.noun} file")
    try:
        with zipfile.ZipFile(p) as z:
            meta = json.loads(z.read(META))
            data = z.read(WEIGHTS)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise kind.error(f"{p}: not a readable gapkit {kind.noun} file ({exc})") from None
    _check_header(p, meta, kind)
    digest = meta.get(DIGEST_KEY)
    if (digest or kind.require_digest) and weights_digest(data) != digest:
        raise kind.error(f"{p}: the weights do not match their digest: the file is corrupt")
    return ModelFile(p, kind, meta, data)


def _check_header(p: Path, meta: object, kind: FileKind) -> None:
    """Refuse a meta that is not an object, of another kind (named when it is gapkit's) or version."""
    found = meta.get("kind") if isinstance(meta, dict) else None
    if found != kind.kind:
        other = KINDS.get(found) if isinstance(found, str) else None
        what = f"it is a gapkit {other.noun} file" if other else f"meta.json kind is not {kind.kind!r}"
        raise kind.error(f"{p}: not a gapkit {kind.noun} file ({what})")
    if meta.get("file_version") != kind.version:
        raise kind.error(f"{p}: {kind.noun} file version {meta.get('file_version')!r}; "
                         f"this gapkit reads {kind.version}")
