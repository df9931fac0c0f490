"""The malformed-input tier: every reader against generated damage (see malformed_cases).

Each case must finish (no traceback, no hang), read every good record, and either read the
damaged record (a legitimate variant) or name its file and the reason; a whole file that is
gone may instead stop the job with an input error naming it.
"""

from __future__ import annotations

import signal

import pytest
from malformed_cases import build, cases, expected

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
    want = expected(fmt, kind)
    try:
        faces, rep = load(DataSource(path=path, format=real), check_images=True)
    except InputError as exc:
        assert want == "refused-or-named", exc
        assert victim in str(exc) or str(path) in str(exc)
        return
    ids = set(faces.ids)
    if good:
        assert good <= ids, f"good records lost: {sorted(good - ids)}"
    named = [p for p in rep.problems if victim in p.path or victim in p.reason]
    if want == "good":
        assert not rep.problems, rep.problems
        assert good is None or len(ids - good) == 1, "the damaged-but-legitimate record was not read"
    elif want in ("named", "refused-or-named"):
        assert named, f"no problem names {victim}: {[str(p) for p in rep.problems]}"
        assert all(p.reason for p in named)
        if good is not None:
            assert not ids - good, f"a damaged record was read: {sorted(ids - good)}"
