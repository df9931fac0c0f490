"""The malformed-input tier: every reader against generated damage (see malformed_cases).

Each case must finish (no traceback, no hang), read every good record, and either read the
damaged record (a legitimate variant) or name its file and the reason; a whole file that is
gone may instead stop the job with an input error naming it.
"""

from __future__ import annotations

import signal

import pytest
from malformed_cases import IMAGE_KINDS, build, cases, expected

from gapkit.errors import InputError
from gapkit.faceset import DataSource, load


@pytest.fixture(autouse=True)
def no_hang():
    def boom(*_):
        raise TimeoutError("reader hung")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("fmt,kind", cases(), ids=[f"{f}-{k}" for f, k in cases()])
def test_reader_survives_damage(tmp_path, fmt, kind):
    path, real, good, victim = build(fmt, kind, tmp_path)
    _check(DataSource(path=path, format=real), good, victim, expected(fmt, kind))


@pytest.mark.parametrize("fmt,kind", cases(), ids=[f"{f}-{k}" for f, k in cases()])
def test_reader_survives_damage_reading_labels_only(tmp_path, fmt, kind):
    # The same damage read with --no-images: a damaged image is not read, so its labels are good.
    path, real, good, victim = build(fmt, kind, tmp_path)
    want = "good" if kind in IMAGE_KINDS else expected(fmt, kind)
    _check(DataSource(path=path, format=real, labels_only=True), good, victim, want)


def _check(source: DataSource, good: set[str] | None, victim: str, want: str) -> None:
    try:
        faces, rep = load(source, check_images=not source.labels_only)
    except InputError as exc:
        assert want == "refused-or-named", exc
        assert victim in str(exc) or str(source.path) in str(exc)
        return
    ids = set(faces.ids)
    if good:
        assert good <= ids, f"good records lost: {sorted(good - ids)}"
    assert not [p for p in rep.problems if p.kind == "internal"], "a reader crashed on a record"
    named = [p for p in rep.problems if victim in p.path or victim in p.reason]
    if want == "good":
        assert not rep.problems, rep.problems
        assert not good or len(ids - good) == 1, "the damaged-but-legitimate record was not read"
    elif want in ("named", "refused-or-named"):
        assert named, f"no problem names {victim}: {[str(p) for p in rep.problems]}"
        assert all(p.reason for p in named)
        if good is not None:
            assert not ids - good, f"a damaged record was read: {sorted(ids - good)}"
