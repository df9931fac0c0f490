"""Which real faces to label: selection policies over an unlabelled pool.

A policy ranks the pool without reading a label: for a budget of N faces the selection is the
first N of its ranking, so a larger budget keeps a smaller one's faces (nested, as the grid's
random subsets are). Policies that look at the faces see a :class:`PoolView`, built from the
crops' pixels and the synthetic model (trained on synthetic faces only): its predicted shape,
its prediction on the mirrored crop, the pose estimated from that shape, and an appearance
embedding from its backbone. Policies are looked up by name in :data:`POLICIES`
(:func:`register_policy` adds one).

- ``random``: a seeded permutation, exactly the draw the grid has always made.
- ``diverse``: greedy k-center (a coreset) over shape, pose and appearance, each block given
  equal weight; the first face is drawn by the seed.
- ``uncertain``: the faces where the synthetic model disagrees most with itself on the mirrored
  crop (flip inconsistency, in inter-ocular units), each pick discounted by how close it lies
  to faces already picked, so one hard pose does not take every slot.
- ``list``: the order of a selection list (``gapkit select``'s output) named by the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapkit.align import generalised_procrustes
from gapkit.augment import to_tensor_batch
from gapkit.errors import ConfigError, InputError
from gapkit.files import atomic_write_text
from gapkit.metrics import normaliser
from gapkit.pose import estimate_pose
from gapkit.refine.frame import mirror_points
from gapkit.schemes import LandmarkScheme, get_scheme
from gapkit.train.data import FaceCrops


@dataclass
class PoolView:
    """What a policy may know of the pool's N faces, none of it from a label: ``shapes`` and
    ``mirrored`` (N, K, 2) crop pixels (the synthetic model on each crop and on its mirror image,
    mapped back), ``pose`` (N, 3) yaw, pitch, roll in degrees from ``shapes``, ``embedding``
    (N, D) pooled backbone features."""

    ids: list[str]
    scheme: LandmarkScheme
    shapes: np.ndarray
    mirrored: np.ndarray
    pose: np.ndarray
    embedding: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def flip_disagreement(self) -> np.ndarray:
        """(N,) mean point distance between the two predictions over the predicted inter-ocular
        distance (the bbox size where the scheme has no eyes)."""
        d = np.linalg.norm(self.shapes - self.mirrored, axis=-1).mean(-1)
        return d / np.maximum(normaliser(self.shapes, self.scheme), 1e-6)

    def descriptor(self) -> np.ndarray:
        """(N, D) shape (Procrustes-aligned), pose and appearance, each block standardised and
        scaled to unit total variance, so no block outweighs another by its dimension."""
        _, tf = generalised_procrustes(self.shapes)
        aligned = tf.apply(self.shapes).reshape(len(self), -1)
        blocks = [aligned, np.nan_to_num(self.pose), self.embedding]
        return np.concatenate([_unit_block(b) for b in blocks], axis=1)


def _unit_block(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float) - np.mean(x, axis=0)
    total = float((x ** 2).sum(1).mean())
    return x / np.sqrt(total) if total > 0 else x


@dataclass
class Ranking:
    """The pool in pick order (indices into the pool) and why each face was picked."""

    order: np.ndarray
    reasons: list[str]

    def take(self, n: int) -> np.ndarray:
        """The selection for a budget of ``n`` faces, sorted (pool order)."""
        return np.sort(self.order[:n])


@dataclass(frozen=True)
class SelectionPolicy:
    name: str
    rank: Callable[[int, PoolView | None, int], Ranking]  # (pool size, view, seed) -> ranking
    needs_view: bool  # reads the pool's faces (needs the synthetic model)
    about: str


POLICIES: dict[str, SelectionPolicy] = {}


def register_policy(policy: SelectionPolicy) -> SelectionPolicy:
    """Add a policy to :data:`POLICIES` under its name (replacing one of that name)."""
    POLICIES[policy.name] = policy
    return policy


def get_policy(name: str) -> SelectionPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown selection policy {name!r}; use {', '.join(POLICIES)}") from None


def looks_at_faces(selection: str) -> bool:
    """Whether the grid's ``selection`` ranks the pool through the synthetic model (``list``
    follows a file)."""
    return selection != "list" and get_policy(selection).needs_view


def rank_random(n: int, view: PoolView | None, seed: int) -> Ranking:
    order = np.random.default_rng(seed).permutation(n)
    return Ranking(order, [f"random draw (seed {seed})"] * n)


def k_center(x: np.ndarray, first: int, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center over the rows of ``x`` from row ``first``: each next pick is the row
    farthest from every row picked so far (with ``weight``, the largest weight x that distance).
    Returns the order of every row and each pick's distance to the earlier ones."""
    n = len(x)
    order, gaps = np.empty(n, int), np.zeros(n)
    nearest = np.full(n, np.inf)
    pick = first
    for i in range(n):
        order[i], gaps[i] = pick, nearest[pick] if i else np.inf
        nearest = np.minimum(nearest, np.linalg.norm(x - x[pick], axis=1))
        nearest[pick] = -1.0  # picked rows are never picked again
        score = nearest if weight is None else np.where(nearest < 0, -1.0, nearest * weight)
        pick = int(np.argmax(score))
    return order, gaps


def rank_diverse(n: int, view: PoolView | None, seed: int) -> Ranking:
    x = view.descriptor()
    first = int(np.random.default_rng(seed).integers(n))
    order, gaps = k_center(x, first)
    return Ranking(order, [_why("first face, drawn by the seed", view, i) if np.isinf(g)
                           else _why(f"farthest from the faces picked before (distance {g:.2f})", view, i)
                           for i, g in zip(order, gaps, strict=True)])


def rank_uncertain(n: int, view: PoolView | None, seed: int) -> Ranking:
    u = view.flip_disagreement()
    x = view.descriptor()
    # a face as uncertain as another but close to a face already picked counts for less: its
    # weight is its uncertainty, the k-center distance turns that into coverage
    first = int(np.argmax(u))
    order, gaps = k_center(x, first, weight=u / max(float(u.max()), 1e-12))
    return Ranking(order, [_why(f"flip disagreement {100 * u[i]:.1f}% of the eye distance"
                                + ("" if np.isinf(g) else f", distance {g:.2f} from earlier picks"), view, i)
                           for i, g in zip(order, gaps, strict=True)])


def _why(text: str, view: PoolView, i: int) -> str:
    yaw, pitch, _ = view.pose[i]
    return f"{text}; estimated yaw {yaw:+.0f}°, pitch {pitch:+.0f}°" if np.isfinite(yaw) else text


def rank_by_list(ids: list[str], order_ids: list[str], seed: int, source: str) -> Ranking:
    """The order of a selection list: its faces first, in its order; then the rest of the pool
    by the seed (so every budget is still a nested selection). Ids not in the pool are an error."""
    where = {i: k for k, i in enumerate(ids)}
    missing = [i for i in order_ids if i not in where]
    if missing:
        raise ConfigError(f"{source}: {len(missing)} ids are not in the real training pool (first: {missing[0]!r})")
    head = [where[i] for i in dict.fromkeys(order_ids)]
    rest = np.setdiff1d(np.arange(len(ids)), head)
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    reasons = [f"rank {k + 1} in {source}" for k in range(len(head))] + [f"after the list (seed {seed})"] * len(rest)
    return Ranking(np.concatenate([np.array(head, int), rest]), reasons)


register_policy(SelectionPolicy("random", rank_random, False, "a seeded random draw (the published protocol)"))
register_policy(SelectionPolicy("diverse", rank_diverse, True,
                                "greedy k-center over the synthetic model's shape, pose and appearance"))
register_policy(SelectionPolicy("uncertain", rank_uncertain, True,
                                "the synthetic model's flip disagreement, spread by k-center distance"))


def pool_view(model, crops: FaceCrops, device: str = "cpu", batch_size: int = 128) -> PoolView:
    """The label-free view of ``crops`` through the synthetic model ``model`` (a LandmarkNet):
    only the crops' pixels are read, never their points."""
    import torch  # deferred: `import gapkit.bench` does not need torch until a model runs

    net = model.to(device).eval()
    flip = np.array(crops.scheme.flip)
    shapes, mirrored, emb = [], [], []
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = to_tensor_batch(crops.images[i:i + batch_size]).to(device)
            shapes.append(net(x).float().cpu().numpy())
            mirrored.append(mirror_points(net(x.flip(-1)).float().cpu().numpy(), flip, x.shape[-1]))
            emb.append(net.features(x).float().cpu().numpy())
    net.cpu()
    s = np.concatenate(shapes)
    pose = estimate_pose(s, crops.scheme.name, crops.size, crops.size)
    return PoolView(list(crops.ids), crops.scheme, s, np.concatenate(mirrored), pose, np.concatenate(emb))


def write_selection(path: str | Path, ids: list[str], ranking: Ranking, n: int, header: str,
                    overwrite: bool = False) -> Path:
    """The first ``n`` faces of ``ranking`` as a selection list: a ``# header`` line, then one
    ``rank<TAB>id<TAB>reason`` line per face, best first (written atomically)."""
    lines = [f"# {header}", "# rank\tid\treason"]
    lines += [f"{k + 1}\t{ids[i]}\t{ranking.reasons[k]}" for k, i in enumerate(ranking.order[:n])]
    atomic_write_text(path, "\n".join(lines) + "\n", overwrite=overwrite)
    return Path(path)


def read_selection(path: str | Path | None) -> list[str]:
    """The ids of a selection list, in its order: ``rank<TAB>id[<TAB>reason]`` lines (as
    :func:`write_selection` writes) or one id per line; ``#`` lines are comments."""
    p = Path(path) if path is not None else None
    if p is None or not p.is_file():
        raise InputError(f"{p}: no such selection list")
    ids: list[str] = []
    for no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) == 1:
            ids.append(cols[0].strip())
        elif cols[0].strip().isdigit() and len(cols) >= 2 and cols[1].strip():
            ids.append(cols[1].strip())
        else:
            raise InputError(f"{p}:{no}: a selection line is 'rank<TAB>id<TAB>reason' or one id, got {line[:80]!r}")
    if not ids:
        raise InputError(f"{p}: the selection list names no face")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{p}: id {dup!r} is listed twice")
    return ids


def select_faces(records: list, policy: str, model=None, seed: int = 0, size: int = 64, margin: float = 1.3,
                 device: str = "cpu") -> Ranking:
    """Rank face ``records`` by ``policy`` for labelling. The crops are cut by the model's crop
    policy (each face's bbox, else its landmark box) and only their pixels are read, through
    ``model`` (a synthetic model's LandmarkNet; needed by policies that look at faces)."""
    pol = get_policy(policy)
    if not pol.needs_view:
        return pol.rank(len(records), None, seed)
    if model is None:
        raise ConfigError(f"the {policy} policy reads the faces through a synthetic model; give one")
    blind = np.full((len(records), get_scheme(records[0].scheme).num_points, 2), np.nan)  # no label is read
    return pol.rank(len(records), pool_view(model, FaceCrops(records, size, margin, points=blind), device), seed)

