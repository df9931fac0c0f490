"""gapkit: close the label gap and the domain gap between synthetic and real facial-landmark data.

Coordinate convention, stated once: points are float arrays of shape (K, 2), or (N, K, 2)
batched, in 0-based pixel (x, y) with the origin at the top-left corner of the top-left
pixel. NaN marks a missing point. Readers and writers convert to and from file conventions.

The Python API (:mod:`gapkit.api`) is importable from here::

    import gapkit as gk
    faces = gk.load("300w/", format="300w", split="train")       # a FaceSet
    adapter = gk.fit_adapter(mediapipe_faces, faces)               # paired by id
    rows = gk.benchmark("bench.toml")                              # the five strategies
    model = gk.train_detector("300w/", "m.gkm"); gk.predict_faces(model, "photos/", "p.jsonl", boxes="detect")
"""

from gapkit.version import __version__

# not `adapt`, `train` or `predict`: those are the wings' packages, which an import sets as attributes here
API = ("apply_adapter", "benchmark", "export", "fit_adapter", "gap_report", "human_semantics", "load", "load_adapter",
       "load_model", "map_scheme", "predict_faces", "simulate", "train_detector")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    # The API is loaded on first use, so `import gapkit` (and the CLI's start) stays light.
    if name in API:
        from gapkit import api  # deferred: it imports every wing of the library

        return getattr(api, name)
    raise AttributeError(f"module 'gapkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
