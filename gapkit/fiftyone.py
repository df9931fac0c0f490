"""FiftyOne integration: manifests in and out of FiftyOne datasets, gap fields, saved views,
embeddings and the App. The only gapkit module that imports ``fiftyone``; nothing else imports
this module, so the rest of gapkit stays fast to start.

Conventions at this boundary: FiftyOne keypoints are normalised (x, y) in [0, 1] of the image
(``x_pixel / width``, the 0-based pixel frame scaled); a missing point is ``[nan, nan]``, never
dropped; points off the frame stay outside [0, 1]. Each face is one sample, so a ``Keypoints``
field holds one ``Keypoint`` carrying ``visible`` (per point), ``scheme`` and, on predictions,
``errors`` (per point, % of the normaliser).

Use it as a FiftyOne dataset type::

    fo.Dataset.from_dir(dataset_dir="out/", dataset_type="gapkit.fiftyone.ManifestDataset")
    dataset.export(export_dir="again/", dataset_type="gapkit.fiftyone.ManifestDataset")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # the bundled MongoDB is old, on purpose

import fiftyone as fo  # noqa: E402
import fiftyone.brain as fob  # noqa: E402
import fiftyone.core.utils as fou  # noqa: E402
import fiftyone.types as fot  # noqa: E402
import fiftyone.utils.data as foud  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from fiftyone import ViewField as F  # noqa: E402
from fiftyone.core.session import session as fos  # noqa: E402

from gapkit.adapt import LabelAdapter  # noqa: E402
from gapkit.align import generalised_procrustes  # noqa: E402
from gapkit.errors import GapkitError, NoMappingError, Problem  # noqa: E402
from gapkit.faceset import DataSource, Report, as_sources, empty_set_error, load  # noqa: E402
from gapkit.formats.manifest import ManifestWriter  # noqa: E402
from gapkit.gap.visual import face_crops, handcrafted_features  # noqa: E402
from gapkit.metrics import point_errors  # noqa: E402
from gapkit.pose import records_pose  # noqa: E402
from gapkit.records import FaceRecord, make_record  # noqa: E402
from gapkit.schemes import LandmarkScheme, find_mapper, get_scheme  # noqa: E402

GROUND_TRUTH = "ground_truth"
POSE_BINS = ((-90.0, -30.0), (-30.0, -10.0), (-10.0, 10.0), (10.0, 30.0), (30.0, 90.0))


# ---- keypoints <-> pixel points ------------------------------------------------------------

def to_keypoints(points: np.ndarray, width: int, height: int, scheme: str, visible: Sequence[bool] | None = None,
                 **attributes) -> fo.Keypoints:
    """(K, 2) 0-based pixel (x, y) -> a Keypoints label with one normalised Keypoint."""
    norm = np.asarray(points, float) / np.array([width, height], float)
    kp = fo.Keypoint(label="face", points=[[float(x), float(y)] for x, y in norm], scheme=scheme, **attributes)
    if visible is not None:
        kp["visible"] = [bool(v) for v in visible]
    return fo.Keypoints(keypoints=[kp])


def from_keypoint(kp: fo.Keypoint, width: int, height: int) -> np.ndarray:
    """A Keypoint -> (K, 2) 0-based pixel (x, y), NaN where missing."""
    return np.array([[np.nan if v is None else v for v in p] for p in kp.points], float) * np.array([width, height])


def _parse_predictions(predictions: dict[str, str | Path] | Sequence[str | Path] | None) -> dict[str, Path]:
    if predictions is None:
        return {}
    if isinstance(predictions, dict):
        return {k: Path(v) for k, v in predictions.items()}
    out: dict[str, Path] = {}
    for item in predictions:
        name, _, path = str(item).rpartition("=")
        name = name or ("predictions" if "predictions" not in out else Path(path).stem)
        if name == GROUND_TRUTH or not name.isidentifier():
            raise GapkitError(f"prediction field name {name!r} must be an identifier other than {GROUND_TRUTH}")
        out[name] = Path(path)
    return out


# ---- importer ------------------------------------------------------------------------------

class ManifestDatasetImporter(foud.GenericSampleDatasetImporter):
    """Reads one or more face sets (manifests, or dataset folders of any gapkit format) and
    prediction manifests joined by face id into samples.

    Args:
        dataset_dir: a folder holding ``manifest.jsonl`` (or pass ``manifest``)
        manifest: a manifest path, a DataSource (a folder and its format), or a list of them
            (e.g. synthetic and real together)
        predictions: ``{field: manifest}`` or ``["field=path", "path"]``; records joined by id
        adapter: a ``.gka`` label adapter; its output goes to the ``adapted`` field
        adapt_field: the field the adapter reads [default: the first field in its source scheme]
        scheme: the scheme of ``ground_truth`` [default: the first manifest's]; other schemes are
            mapped into it and kept as ``native_<scheme>`` too
        domain: the ``domain`` of records that do not name one [default: their ``source``];
            one value for every input, or a list with one per input (None: the default)
    """

    def __init__(self, dataset_dir=None, manifest=None, predictions=None, adapter=None, adapt_field=None,
                 scheme=None, domain=None, shuffle=False, seed=None, max_samples=None):
        super().__init__(dataset_dir=dataset_dir, shuffle=shuffle, seed=seed, max_samples=max_samples)
        if manifest is None:
            if dataset_dir is None:
                raise GapkitError("give dataset_dir (a folder with manifest.jsonl) or manifest")
            manifest = Path(dataset_dir) / "manifest.jsonl"
        self.sources = as_sources(manifest)
        domains = list(domain) if isinstance(domain, list | tuple) else [domain] * len(self.sources)
        if len(domains) != len(self.sources):
            raise GapkitError(f"{len(domains)} domains for {len(self.sources)} inputs: give one, or one per input")
        self.domains = domains
        self.predictions = _parse_predictions(predictions)
        self.adapter_path = adapter
        self.adapt_field = adapt_field
        self.scheme = scheme
        self._domain_of: dict[str, str] = {}
        self.problems: list[Problem] = []
        self.schemes: dict[str, str] = {}
        self._samples: list[fo.Sample] = []
        self._iter = None

    def __len__(self) -> int:
        return len(self._samples)

    def __next__(self) -> fo.Sample:
        return next(self._iter)

    @property
    def has_dataset_info(self) -> bool:
        return True

    @property
    def has_sample_field_schema(self) -> bool:
        return False

    def get_dataset_info(self) -> dict:
        skeletons = {f: fo.KeypointSkeleton(labels=get_scheme(s).points, edges=get_scheme(s).skeleton)
                     for f, s in self.schemes.items()}
        return {"skeletons": skeletons, "default_skeleton": skeletons.get(GROUND_TRUTH),
                "gapkit": {"schemes": self.schemes, "manifests": [str(s.path) for s in self.sources],
                           "predictions": {k: str(v) for k, v in self.predictions.items()},
                           "problems": [str(p) for p in self.problems]}}

    def _read(self, src: DataSource | Path, check_images: bool = True) -> list[FaceRecord]:
        # an image that does not open would be an empty sample in the App: left out and reported
        faces, report = load(src, check_images=check_images)
        self.problems += report.problems
        return faces.records

    def setup(self) -> None:
        records = []
        for src, domain in zip(self.sources, self.domains, strict=True):
            recs = self._read(src)
            records += recs
            if domain:
                self._domain_of.update((r.id, domain) for r in recs)
        if not records:
            raise empty_set_error("the face sets", self.sources, Report(problems=list(self.problems)))
        gt_scheme = self.scheme or records[0].scheme
        self.schemes[GROUND_TRUTH] = gt_scheme
        gt = self._in_scheme(records, gt_scheme, "ground truth")
        fields: dict[str, dict[str, tuple[np.ndarray, FaceRecord]]] = {}
        for name, path in self.predictions.items():
            preds = self._read(path, check_images=False)
            schemes = {p.scheme for p in preds}
            if len(schemes) != 1:
                raise GapkitError(f"{path}: predictions must be in one scheme, got {sorted(schemes) or 'none'}")
            self.schemes[name] = schemes.pop()
            fields[name] = {p.id: (p.points, p) for p in preds}
        if self.adapter_path:
            fields["adapted"] = self._adapt(records, gt, fields)
        pose = records_pose(records, prefer_stored=True)
        samples = []
        for i, r in enumerate(records):
            samples.append(self._sample(r, gt[i], pose[i], {f: v.get(r.id) for f, v in fields.items()}))
        for name, by_id in fields.items():
            unmatched = set(by_id) - {r.id for r in records}
            if unmatched:
                self.problems.append(Problem(str(self.predictions.get(name, name)), None,
                                             f"{len(unmatched)} {name} records match no face id, e.g. {sorted(unmatched)[0]}"))
        self._samples = self._preprocess_list(samples)
        self._iter = iter(self._samples)

    def _in_scheme(self, records: list[FaceRecord], scheme: str, what: str) -> list[np.ndarray]:
        out = []
        for r in records:
            if r.scheme != scheme:
                try:
                    mapper = find_mapper(r.scheme, scheme)  # cached: one lookup a scheme
                except NoMappingError:
                    raise GapkitError(f"{what}: records in {r.scheme} (e.g. {r.id}) cannot be mapped to {scheme}; "
                                      "convert them first or pass another scheme") from None
                self.schemes[f"native_{r.scheme}"] = r.scheme
                out.append(mapper(r.points))
            else:
                out.append(r.points)
        return out

    def _adapt(self, records, gt, fields) -> dict:
        adapter = LabelAdapter.load(self.adapter_path)
        src = adapter.source.name
        field = self.adapt_field or next((f for f, s in self.schemes.items() if s == src), None)
        if field is None or self.schemes.get(field) != src:
            raise GapkitError(f"the adapter reads {src}, and no field is in that scheme "
                              f"(fields: {', '.join(f'{k} ({v})' for k, v in self.schemes.items())})")
        if field == GROUND_TRUTH:
            ids, pts = [r.id for r in records], np.stack(gt)
        elif field.startswith("native_"):  # ground truth was mapped to another scheme: read the records' own points
            native = [r for r in records if r.scheme == src]
            ids, pts = [r.id for r in native], np.stack([r.points for r in native])
        else:
            ids = list(fields[field])
            pts = np.stack([fields[field][i][0] for i in ids])
        self.schemes["adapted"] = adapter.target.name
        by_id = {r.id: r for r in records}
        # An adapter with a refinement stage reads the faces' images; one without keeps the shape answer.
        pred, _, problems = adapter.predict_records([by_id[i] for i in ids], pts)
        self.problems += problems
        return {i: (p, None) for i, p in zip(ids, pred, strict=True)}

    def _sample(self, r: FaceRecord, gt: np.ndarray, pose: np.ndarray, extra: dict) -> fo.Sample:
        w, h = r.width, r.height
        gt_scheme = get_scheme(self.schemes[GROUND_TRUTH])
        visible = r.visible if r.scheme == gt_scheme.name else None
        s = fo.Sample(filepath=r.image, metadata=fo.ImageMetadata(width=w, height=h))
        s[GROUND_TRUTH] = to_keypoints(gt, w, h, gt_scheme.name, visible, bbox=list(r.bbox) if r.bbox else None)
        if r.scheme != gt_scheme.name:
            s[f"native_{r.scheme}"] = to_keypoints(r.points, w, h, r.scheme, r.visible)
        s["face_id"], s["scheme"], s["source"], s["split"] = r.id, r.scheme, r.source, r.split or None
        if r.split:
            s.tags.append(r.split)
        s["domain"] = r.attributes.get("domain") or self._domain_of.get(r.id) or r.source or None
        for name, v in zip(("yaw", "pitch", "roll"), pose, strict=True):
            s[name] = None if np.isnan(v) else float(v)
        s["outside_count"] = int(r.outside().sum())
        s["attributes"] = r.attributes or None  # kept whole, so the export round-trips
        for field, item in extra.items():
            if item is None:
                continue
            pts, rec = item
            scheme = get_scheme(self.schemes[field])
            attrs = {}
            comparable = _in_gt_scheme(pts, scheme, gt_scheme)
            if comparable is not None:
                err = point_errors(comparable[None], gt[None], gt_scheme, visible=None if visible is None
                                   else np.asarray(visible)[None])[0] * 100
                attrs["errors"] = [None if np.isnan(e) else float(e) for e in err]
                s[f"nme_{field}"] = float(np.nanmean(err)) if np.isfinite(err).any() else None
            s[field] = to_keypoints(pts, w, h, scheme.name, rec.visible if rec is not None else None, **attrs)
        return s


def _in_gt_scheme(pts: np.ndarray, scheme: LandmarkScheme, gt_scheme: LandmarkScheme) -> np.ndarray | None:
    """A prediction in the ground truth's scheme (mapped when it is not); None when it has missing
    points or no mapping exists, so no error can be scored."""
    if np.isnan(pts).any():
        return None
    if scheme.name == gt_scheme.name:
        return pts
    try:
        return find_mapper(scheme.name, gt_scheme.name)(pts)
    except NoMappingError:
        return None


# ---- exporter ------------------------------------------------------------------------------

class ManifestDatasetExporter(foud.GenericSampleDatasetExporter):
    """Writes samples back to ``export_dir/manifest.jsonl``: one FaceRecord per sample, from
    ``label_field`` (default ``ground_truth``) in its keypoint's scheme."""

    def __init__(self, export_dir=None, label_field=GROUND_TRUTH, overwrite=False):
        super().__init__(export_dir=export_dir)
        self.label_field = label_field
        self.overwrite = overwrite
        self.count = 0

    def setup(self) -> None:
        self._writer = ManifestWriter(Path(self.export_dir) / "manifest.jsonl", overwrite=self.overwrite).__enter__()

    def export_sample(self, sample: fo.Sample) -> None:
        label = sample[self.label_field]
        if label is None or not label.keypoints:
            raise GapkitError(f"sample {sample.id} ({sample.filepath}) has no {self.label_field} keypoints")
        kp = label.keypoints[0]
        w, h = sample.metadata.width, sample.metadata.height
        attrs = dict(sample["attributes"] or {}) if sample.has_field("attributes") else {}
        bbox = kp["bbox"] if kp.has_field("bbox") else None
        rec = make_record(sample.filepath, None, id=sample["face_id"] if sample.has_field("face_id") else sample.id,
                          image=sample.filepath, width=w, height=h, scheme=kp["scheme"],
                          points=from_keypoint(kp, w, h), visible=kp["visible"] if kp.has_field("visible") else None,
                          bbox=tuple(bbox) if bbox else None, source=(sample["source"] if sample.has_field("source") else "") or "",
                          split=(sample["split"] if sample.has_field("split") else "") or "", attributes=attrs)
        self._writer.write(rec)
        self.count += 1

    def close(self, *args) -> None:
        self._writer.__exit__(*args)


class ManifestDataset(fot.Dataset):
    """gapkit manifests as a FiftyOne dataset type (``dataset_type="gapkit.fiftyone.ManifestDataset"``)."""

    def get_dataset_importer_cls(self):
        return ManifestDatasetImporter

    def get_dataset_exporter_cls(self):
        return ManifestDatasetExporter


# ---- dataset, views, embeddings ------------------------------------------------------------

def build_dataset(manifests: Sequence[str | Path | DataSource] | str | Path | DataSource, name: str, *,
                  predictions: dict[str, str | Path] | Sequence[str] | None = None, adapter: str | Path | None = None,
                  scheme: str | None = None, domain: str | Sequence[str | None] | None = None, persistent: bool = True,
                  refresh: bool = True, embeddings: str | None = "pca", selection: Sequence[str] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> tuple[fo.Dataset, list[Problem]]:
    """Build (or, with ``refresh``, rebuild) dataset ``name`` from face sets (manifests or
    DataSources; ``domain`` one for all or one per input), with gap fields,
    saved views and, unless ``embeddings`` is None, two embeddings visualisations. With
    ``selection`` (face ids in pick order, `gapkit select`'s list), those faces are tagged."""
    if fo.dataset_exists(name):
        if not refresh:
            raise GapkitError(f"FiftyOne dataset {name!r} exists; refresh it or pick another name")
        fo.delete_dataset(name)
    log("reading manifests")
    importer = ManifestDatasetImporter(manifest=manifests, predictions=predictions, adapter=adapter, scheme=scheme,
                                       domain=domain)
    ds = fo.Dataset(name)
    try:
        ds.add_importer(importer, progress=False)
        ds.persistent = persistent
        set_colours(ds)
        if selection:
            tag_selection(ds, selection)
        log("saving views")
        add_views(ds)
        if embeddings:
            log("embeddings")
            add_embeddings(ds, method=embeddings)
    except BaseException:
        ds.delete()
        raise
    return ds, importer.problems


# Ground truth green, predictions in warm colours, adapted labels blue: told apart at a glance.
FIELD_COLOURS = {GROUND_TRUTH: "#00c853", "adapted": "#2979ff"}
NATIVE_COLOUR = "#d500f9"  # a set's own labels, when ground truth shows them mapped to another scheme
PREDICTION_COLOURS = ("#ff1744", "#ff9100", "#ffea00", "#00e5ff")


def set_colours(ds: fo.Dataset) -> dict[str, str]:
    """One fixed colour per keypoint field in the App (saved on the dataset); returns them."""
    schema = ds.get_field_schema()
    kps = [f for f in schema if isinstance(schema[f], fo.EmbeddedDocumentField) and schema[f].document_type is fo.Keypoints]
    others = iter(PREDICTION_COLOURS * len(kps))
    colours = {f: FIELD_COLOURS.get(f) or (NATIVE_COLOUR if f.startswith("native_") else next(others)) for f in kps}
    ds.app_config.color_scheme = fo.ColorScheme(color_by="field",
                                                fields=[{"path": f, "fieldColor": c} for f, c in colours.items()])
    ds.save()
    return colours


def nme_fields(ds: fo.Dataset) -> list[str]:
    return [f for f in ds.get_field_schema() if f.startswith("nme_")]


def tag_selection(ds: fo.Dataset, ids: Sequence[str]) -> int:
    """Tag the faces of a selection list ``selected`` and give each its ``selection_rank``
    (1 = picked first); returns how many of them the dataset holds."""
    rank = {i: k + 1 for k, i in enumerate(ids)}
    face_ids = ds.values("face_id")
    ds.set_values("selection_rank", [rank.get(f) for f in face_ids])
    chosen = ds.exists("selection_rank")
    chosen.tag_samples("selected")
    return len(chosen)


def add_views(ds: fo.Dataset) -> list[str]:
    """Save the gap views on ``ds``; returns their names."""
    schema = ds.get_field_schema()
    saved = []

    def save(name: str, view, description: str) -> None:
        ds.save_view(name, view, description=description, overwrite=True)
        saved.append(name)

    nmes = nme_fields(ds)
    if nmes:
        key = "nme_predictions" if "nme_predictions" in nmes else nmes[0]
        save("worst_nme", ds.exists(key).sort_by(key, reverse=True),
             f"faces by {key} (% of the normaliser), worst first")
    overlay = [f for f in schema if f == GROUND_TRUTH or f == "adapted" or f.startswith("native_")
               or (isinstance(schema[f], fo.EmbeddedDocumentField) and schema[f].document_type is fo.Keypoints)]
    if "adapted" in schema:
        save("label_gap", ds.exists("adapted").select_fields(overlay + nmes + ["face_id", "domain"]),
             "the synthetic-semantics labels, their adapted version and the ground truth, overlaid")
    for (lo, hi), label in zip(POSE_BINS, ("far_left", "left", "frontal", "right", "far_right"), strict=True):
        save(f"pose_{label}", ds.match((F("yaw") >= lo) & (F("yaw") < hi)).sort_by("yaw"),
             f"yaw in [{lo:g}, {hi:g}) degrees (negative: nose to the image left)")
    save("outside_image", ds.match(F("outside_count") > 0).sort_by("outside_count", reverse=True),
         "faces with landmarks off the image frame")
    if "selection_rank" in schema:
        save("selected", ds.exists("selection_rank").sort_by("selection_rank"),
             "the faces a selection list picks for labelling, in pick order (gapkit select)")
    return saved


def _pixel_shapes(view) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) ground-truth pixels of ``view`` and the (N,) sample ids."""
    ids, pts, ws, hs = view.values(["id", f"{GROUND_TRUTH}.keypoints.points", "metadata.width", "metadata.height"])
    shapes = np.array([[[np.nan if v is None else v for v in p] for p in kps[0]] for kps in pts], float)
    return shapes * np.stack([ws, hs], 1)[:, None, :], np.asarray(ids)


def add_embeddings(ds: fo.Dataset, method: str = "pca", seed: int = 0) -> list[str]:
    """``label_shapes``: aligned ground-truth shapes (the label gap); ``visual_features``:
    handcrafted face-crop features (the visual gap). Colour them by ``domain`` in the App."""
    view = ds.exists(GROUND_TRUTH)
    if len(view) < 3:
        return []
    shapes, ids = _pixel_shapes(view)
    mean, tf = generalised_procrustes(shapes)
    aligned = np.where(np.isnan(shapes), mean, tf.apply(shapes)).reshape(len(shapes), -1)
    files = view.values("filepath")
    records = [FaceRecord.model_construct(id=i, image=f, points=p, bbox=None) for i, f, p in zip(ids, files, shapes, strict=True)]
    crops, kept, _ = face_crops(records)
    keys = ["label_shapes"]
    kw = {"method": method, "seed": seed, "progress": False}
    if method == "tsne":
        kw["pca_dims"] = None if len(view) <= 50 else 50
    quiet = logging.getLogger("fiftyone")
    level, quiet.level = quiet.level, logging.WARNING  # the brain logs each run at INFO
    try:
        fob.compute_visualization(view, embeddings=aligned, brain_key="label_shapes", **kw)
        if len(kept) >= 3:
            fob.compute_visualization(view.select(ids[kept].tolist(), ordered=True),
                                      embeddings=handcrafted_features(crops), brain_key="visual_features", **kw)
            keys.append("visual_features")
    finally:
        quiet.setLevel(level)
    return keys


def app_url(ds: fo.Dataset, address: str, port: int, view: str | None = None) -> str:
    url = f"http://{address}:{port}/datasets/{fou.to_slug(ds.name)}"
    return url + (f"?view={fou.to_slug(view)}" if view else "")


def launch(ds: fo.Dataset, address: str = "127.0.0.1", port: int = 5151):
    """Start the App server for ``ds`` (remote mode: nothing opens a browser)."""
    return fo.launch_app(ds, address=address, port=port, remote=True, auto=False)


def stop(session, timeout: float = 10.0) -> None:
    """Close ``session`` and make sure its App server process is gone: FiftyOne's own shutdown
    can leave the server up for a minute, holding the port."""
    service = fos._server_services.get(session.server_port)
    procs = []
    if service is not None and getattr(service, "child", None) is not None:
        try:
            parent = psutil.Process(service.child.pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
    session.close()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=timeout)
