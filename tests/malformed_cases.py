"""Generated malformed inputs for every reader: one good fixture copy plus one damaged record.

``build(fmt, kind, root)`` writes the dataset and returns (path, format, good ids, victim
name): the ids that must still be read, and the file name a problem must name. Run as a
script to print the outcome of every (format, kind) pair.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HUGE = 50 * 1024 * 1024

# (fixture folder, record annotation, its image, the victim's annotation, the victim's image)
PER_RECORD = {
    "300w": ("300w", "lfpw/trainset/image_0001.pts", "lfpw/trainset/image_0001.png",
             "lfpw/trainset/zz_bad.pts", "lfpw/trainset/zz_bad.png"),
    "facesynthetics": ("facesynthetics", "000000_ldmks.txt", "000000.png", "000099_ldmks.txt", "000099.png"),
    "menpo": ("menpo", "portrait.pts", "portrait.png", "zz_bad.pts", "zz_bad.png"),
    "menpo_ljson": ("menpo", "sketch.ljson", "sketch.png", "zz_bad.ljson", "zz_bad.png"),
    "datagen": ("datagen", "datapoint_00001/camera/key_points/face_standard_key_points.json",
                "datapoint_00001/camera/visible_spectrum_01.png",
                "datapoint_00099/camera/key_points/face_standard_key_points.json",
                "datapoint_00099/camera/visible_spectrum_01.png"),
}
LINE_FORMATS = ("manifest", "wflw", "csv")
WHOLE_FILE = {"coco": ("coco", "faces.json"), "dlib": ("dlib", "faces.xml")}
JSON_FORMATS = {"menpo_ljson", "datagen", "manifest", "coco"}
FORMAT_OF = {"menpo_ljson": "menpo"}
# index of the first coordinate among the free-standing numbers of one record's text
FIRST_COORD = {"300w": 2, "facesynthetics": 0, "menpo": 2, "wflw": 0, "csv": 0}

TEXT_KINDS = ("empty", "truncated", "wrong_count", "nan", "inf", "non_numeric", "binary", "huge_line",
              "bom_crlf", "transposed", "wrong_type_json", "nested_json", "unreadable", "symlink_loop",
              "duplicate_id", "negative_count", "huge_count", "wrong_type_field", "missing_field")
PTS_FORMATS = ("300w", "menpo")  # a .pts header whose n_points would size an allocation
IMAGE_KINDS = ("truncated_image", "zero_byte_image", "text_as_png")
GOOD_VARIANTS = {"bom_crlf"}          # legitimate: must be read
EITHER = {"unreadable"}                # root reads a chmod 000 file; both outcomes are right
# Legitimate in these formats: NaN is a missing point where JSON or CSV store missing points, dlib
# leaves a missing part out, and a WFLW list holds one face per line (validate reports repeats).
LEGITIMATE = {("menpo_ljson", "nan"), ("manifest", "nan"), ("csv", "nan"), ("dlib", "wrong_count"),
              ("wflw", "duplicate_id")}


def expected(fmt: str, kind: str) -> str:
    """good: the damaged record is read; either; refused-or-named: a whole file that is gone;
    named: a problem names the file and every good record is read."""
    if kind in GOOD_VARIANTS or (fmt, kind) in LEGITIMATE:
        return "good"
    if kind in EITHER:
        return "either"
    if fmt in WHOLE_FILE or (fmt in LINE_FORMATS and kind in ("empty", "symlink_loop")):
        return "refused-or-named"
    return "named"

_NUM = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?![\w.])")


def applies(fmt: str, kind: str) -> bool:
    if kind in ("wrong_type_json", "nested_json", "wrong_type_field", "missing_field"):
        return fmt in JSON_FORMATS
    if kind in ("negative_count", "huge_count"):
        return fmt in PTS_FORMATS
    if kind == "duplicate_id":
        return fmt in LINE_FORMATS
    if kind == "transposed":
        return fmt in ("300w", "facesynthetics", "menpo", "manifest", "menpo_ljson")
    return True


def _replace_number(text: str, index: int, new: str) -> str:
    m = list(_NUM.finditer(text))[index]
    return text[:m.start()] + new + text[m.end():]


def _binary() -> bytes:
    rng = random.Random(7)
    return bytes(rng.randrange(256) for _ in range(4096))


def _mutate_text(fmt: str, kind: str, text: str) -> str | bytes:
    """The damaged text of one record (one file, or one line of a line format)."""
    if kind == "empty":
        return ""
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "binary":
        return _binary()
    if kind == "huge_line":
        return "1.5 " * (HUGE // 4)
    if kind == "bom_crlf":
        return "\ufeff" + text.replace("\r\n", "\n").replace("\n", "\r\n")
    if kind == "nested_json":
        return "[" * 100_000 + "]" * 100_000
    if fmt in JSON_FORMATS:
        return _mutate_json(fmt, kind, json.loads(text))
    if kind in ("negative_count", "huge_count"):
        return re.sub(r"n_points:\s*\d+", "n_points: " + ("-5" if kind == "negative_count" else "10000000000000"), text)
    nums = list(_NUM.finditer(text))
    first = FIRST_COORD[fmt]
    if kind in ("nan", "inf", "non_numeric"):
        return _replace_number(text, first, {"nan": "nan", "inf": "inf", "non_numeric": "abc"}[kind])
    if kind == "wrong_count":
        if fmt in ("wflw", "csv"):  # drop one x, y pair
            a, b = nums[first], nums[first + 1]
            sep = text[a.end():b.start()]
            return text[:a.start()] + text[b.end() + len(sep):]
        lines = text.splitlines()
        body = [i for i, line in enumerate(lines) if len(_NUM.findall(line)) == 2 and ":" not in line]
        del lines[body[-1]]
        return "\n".join(lines) + "\n"
    if kind == "transposed":  # two lines of K numbers instead of K lines of two
        lines = text.splitlines()
        body = [i for i, line in enumerate(lines) if len(_NUM.findall(line)) == 2 and ":" not in line]
        pts = [lines[i].split() for i in body]
        rows = [" ".join(p[0] for p in pts), " ".join(p[1] for p in pts)]
        return "\n".join(lines[:body[0]] + rows + lines[body[-1] + 1:]) + "\n"
    raise ValueError(kind)


# A field of the wrong JSON type, and a required field left out, inside one record.
FIELD_DAMAGE = {
    ("manifest", "wrong_type_field"): lambda d: d.update(attributes=[1, 2]),
    ("manifest", "missing_field"): lambda d: d.pop("points"),
    ("menpo_ljson", "wrong_type_field"): lambda d: d.update(groups=["LJSON"]),
    ("menpo_ljson", "missing_field"): lambda d: d["groups"]["LJSON"].pop("landmarks"),
    ("datagen", "wrong_type_field"): lambda d: d["face"].update(standard="all of them"),
    ("datagen", "missing_field"): lambda d: d["face"]["standard"][sorted(d["face"]["standard"])[0]].pop("pixel_2d"),
    ("coco", "wrong_type_field"): lambda d: d["annotations"][-1].update(gapkit="not an object"),
    ("coco", "missing_field"): lambda d: d["annotations"][-1].pop("keypoints"),
}


def _mutate_json(fmt: str, kind: str, doc) -> str:
    if kind == "wrong_type_json":
        return json.dumps(["not", "a", "record"] if fmt != "manifest" else [1, 2, 3])
    if (fmt, kind) in FIELD_DAMAGE:
        FIELD_DAMAGE[fmt, kind](doc)
        return json.dumps(doc)
    if fmt == "manifest":
        pts = doc["points"]
        if kind == "wrong_count":
            doc["points"] = pts[:-1]
        elif kind == "transposed":
            doc["points"] = [[p[0] for p in pts], [p[1] for p in pts]]
        else:
            pts[0][0] = {"nan": float("nan"), "inf": float("inf"), "non_numeric": "abc"}[kind]
        return json.dumps(doc)
    if fmt == "menpo_ljson":
        pts = doc["groups"]["LJSON"]["landmarks"]["points"]
        if kind == "wrong_count":
            del pts[-1]
        elif kind == "transposed":
            doc["groups"]["LJSON"]["landmarks"]["points"] = [[(p or [0, 0])[0] for p in pts],
                                                             [(p or [0, 0])[1] for p in pts]]
        else:
            first = next(p for p in pts if p)
            first[0] = {"nan": float("nan"), "inf": float("inf"), "non_numeric": "abc"}[kind]
        return json.dumps(doc)
    if fmt == "datagen":
        std = doc["face"]["standard"]
        if kind == "wrong_count":
            del std[sorted(std)[-1]]
        else:
            std[sorted(std)[0]]["pixel_2d"]["x"] = {"nan": float("nan"), "inf": float("inf"),
                                                   "non_numeric": "abc"}[kind]
        return json.dumps(doc)
    if fmt == "coco":
        ann = doc["annotations"][-1]
        kp = ann["keypoints"]
        if kind == "wrong_count":
            ann["keypoints"] = kp[:-3]
        else:
            kp[0] = {"nan": float("nan"), "inf": float("inf"), "non_numeric": "abc"}[kind]
        return json.dumps(doc)
    raise ValueError((fmt, kind))


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8"))


def _damage_image(kind: str, img: Path) -> None:
    data = img.read_bytes()
    img.unlink()
    if kind == "truncated_image":
        img.write_bytes(data[: len(data) // 2])
    elif kind == "zero_byte_image":
        img.write_bytes(b"")
    else:
        img.write_text("this is a text file, not an image\n")


def _special(kind: str, target: Path, root: Path) -> bool:
    """unreadable and symlink_loop, which damage the file itself, not its text."""
    if kind == "unreadable":
        os.chmod(target, 0)
        return True
    if kind == "symlink_loop":
        target.unlink()
        target.symlink_to(target.name)  # points at itself
        (root / "loop").symlink_to(".", target_is_directory=True)
        return True
    return False


def build(fmt: str, kind: str, root: Path) -> tuple[Path, str, set[str] | None, str]:
    """Write the case under ``root``; return (path to read, format, ids that must be read, victim name)."""
    from gapkit.faceset import DataSource, load

    real_fmt = FORMAT_OF.get(fmt, fmt)
    if fmt in PER_RECORD:
        folder, ann, img, bad_ann, bad_img = PER_RECORD[fmt]
        root = root / "data"
        shutil.copytree(FIXTURES / folder, root)
        good = set(load(DataSource(path=root, format=real_fmt))[0].ids)
        if fmt == "datagen":
            shutil.copytree(root / "datapoint_00001", root / "datapoint_00099")
        else:
            shutil.copy(root / img, root / bad_img)
            shutil.copy(root / ann, root / bad_ann)
        victim = root / (bad_img if kind in IMAGE_KINDS else bad_ann)
        if kind in IMAGE_KINDS:
            _damage_image(kind, victim)
        elif not _special(kind, victim, root):
            _write(victim, _mutate_text(fmt, kind, victim.read_text(encoding="utf-8")))
        return root, real_fmt, good, victim.name
    if fmt in LINE_FORMATS:
        return _build_lines(fmt, kind, root)
    folder, name = WHOLE_FILE[fmt]
    shutil.copytree(FIXTURES / folder, root / "data")
    path = root / "data" / name
    if kind in IMAGE_KINDS:
        img = next(p for p in (root / "data").rglob("*") if p.suffix in (".png", ".jpg"))
        _damage_image(kind, img)
        return path, fmt, set(), img.name
    if not _special(kind, path, root / "data"):
        text = path.read_text(encoding="utf-8")
        if fmt == "coco" and kind in ("nan", "inf", "non_numeric", "wrong_count", "wrong_type_field", "missing_field"):
            good = set(load(DataSource(path=path, format=fmt))[0].ids)
            doc = json.loads(text)
            _write(path, _mutate_json(fmt, kind, doc))
            return path, fmt, good - {max(good)}, path.name
        if fmt == "dlib" and kind in ("nan", "inf", "non_numeric", "wrong_count"):
            good = set(load(DataSource(path=path, format=fmt))[0].ids) - {"group#0"}
            if kind == "wrong_count":  # one part of the first box left out
                _write(path, re.sub(r"\n\s*<part [^>]*/>", "", text, count=1))
            else:
                _write(path, re.sub(r"x='\d+'", "x='" + {"nan": "nan", "inf": "inf", "non_numeric": "abc"}[kind] + "'",
                                    text, count=1))
            return path, fmt, good, path.name
        _write(path, _mutate_text(fmt, kind, text))
    return path, fmt, (None if kind in GOOD_VARIANTS else set()), path.name


def _build_lines(fmt: str, kind: str, root: Path) -> tuple[Path, str, set[str], str]:
    from gapkit.convert import convert
    from gapkit.faceset import DataSource, load

    data = root / "data"
    if fmt == "manifest":
        data.mkdir(parents=True)
        convert(FIXTURES / "300w", data / "faces.jsonl", "300w", "manifest")
        path, header = data / "faces.jsonl", 0
        shutil.copy(FIXTURES / "300w/lfpw/trainset/image_0001.png", data / "zz_bad.png")
    elif fmt == "wflw":
        shutil.copytree(FIXTURES / "wflw", data)
        path, header = data / "list_98pt_rect_attr_test.txt", 0
        shutil.copy(data / "WFLW_images/0--Parade/face_0.jpg", data / "WFLW_images/0--Parade/zz_bad.jpg")
    else:
        data.mkdir(parents=True)
        shutil.copy(FIXTURES / "csv/landmarks.csv", data)
        for img in (FIXTURES / "csv/images").iterdir():  # beside the table, where the reader looks by default
            shutil.copy(img, data / img.name)
        path, header = data / "landmarks.csv", 0
        shutil.copy(data / "person_0.jpg", data / "zz_bad.jpg")
    good = set(load(DataSource(path=path, format=fmt))[0].ids)
    lines = path.read_text(encoding="utf-8").splitlines()
    template = lines[header]
    if fmt == "manifest":
        d = json.loads(template)
        d.update(id="zz_bad", image=str(data / "zz_bad.png"))
        line = json.dumps(d)
    else:
        line = template.replace("face_0.jpg", "zz_bad.jpg").replace("person_0.jpg", "zz_bad.jpg")
    victim_name = "zz_bad.png" if fmt == "manifest" else "zz_bad.jpg"
    if kind in IMAGE_KINDS:
        img = next(data.rglob(victim_name))
        _damage_image(kind, img)
        path.write_text("\n".join([*lines, line]) + "\n", encoding="utf-8")
        return path, fmt, good, victim_name
    if kind == "duplicate_id":
        path.write_text("\n".join([*lines, template]) + "\n", encoding="utf-8")
        return path, fmt, good, path.name
    if kind == "empty":
        path.write_text("")
        return path, fmt, set(), path.name
    if kind == "bom_crlf":
        _write(path, _mutate_text(fmt, kind, "\n".join([*lines, line]) + "\n"))
        return path, fmt, None, path.name
    if _special(kind, path, data):
        return path, fmt, set(), path.name
    bad = _mutate_text(fmt, kind, line)
    head = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(head + (bad if isinstance(bad, bytes) else bad.encode("utf-8")) + b"\n")
    return path, fmt, good, path.name


def cases() -> list[tuple[str, str]]:
    fmts = [*PER_RECORD, *LINE_FORMATS, *WHOLE_FILE]
    return [(f, k) for f in fmts for k in (*TEXT_KINDS, *IMAGE_KINDS) if applies(f, k)]


def outcome(fmt: str, kind: str, root: Path, labels_only: bool) -> str:
    """ok, crash, silently accepted (bad input read as good) or refused valid (good input refused)."""
    from gapkit.errors import GapkitError
    from gapkit.faceset import DataSource, load

    path, real, good, victim = build(fmt, kind, root)
    want = "good" if labels_only and kind in IMAGE_KINDS else expected(fmt, kind)
    try:
        faces, rep = load(DataSource(path=path, format=real, labels_only=labels_only), check_images=not labels_only)
    except GapkitError:
        return "ok" if want in ("refused-or-named", "either") else "refused valid"
    except Exception:  # noqa: BLE001 - the table counts crashes instead of stopping
        return "crash"
    if any(p.kind == "internal" for p in rep.problems):
        return "crash"
    named = any(victim in p.path or victim in p.reason for p in rep.problems)
    lost = bool(good) and not good <= set(faces.ids)
    if want == "good":
        return "refused valid" if rep.problems or lost else "ok"
    if want == "either":
        return "ok"
    return "ok" if named and not lost else "silently accepted"


if __name__ == "__main__":  # outcome table for the closing note: by mode, reader and kind
    import tempfile
    from collections import Counter, defaultdict

    totals: Counter = Counter()
    bad: dict = defaultdict(list)
    for labels_only in (False, True):
        for fmt, kind in cases():
            with tempfile.TemporaryDirectory() as tmp:
                got = outcome(fmt, kind, Path(tmp), labels_only)
            totals[("labels only" if labels_only else "with images", got)] += 1
            if got != "ok":
                bad[got].append((fmt, kind, labels_only))
    formats = sorted({f for f, _ in cases()})
    print(f"{len(cases())} cases x 2 modes over {len(formats)} readers ({', '.join(formats)}), "
          f"{len(TEXT_KINDS) + len(IMAGE_KINDS)} kinds")
    for key, n in sorted(totals.items()):
        print(f"  {key[0]:12s} {key[1]:18s} {n}")
    for got, items in bad.items():
        print(got, items)
