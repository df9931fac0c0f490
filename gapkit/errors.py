"""Typed errors and the per-record Problem that bulk jobs collect."""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from pathlib import Path


class GapkitError(Exception):
    """Base class: a configuration or usage error that stops the job with one clear line."""


class ConfigError(GapkitError, ValueError):
    """A setting or option that cannot work (also a ValueError, so Pydantic validators may raise it)."""


class InputError(GapkitError):
    """An input that does not exist or holds nothing of its format: the job cannot start."""


class AdapterError(GapkitError):
    """A label adapter cannot be fitted, loaded or applied as asked."""


class ModelError(GapkitError):
    """A model file that cannot be read, is corrupt, or does not fit the data."""


class UnknownSchemeError(GapkitError):
    pass


class NoMappingError(GapkitError):
    pass


class OutputExistsError(GapkitError):
    pass


MAX_REASON = 300  # a 50 MB line quoted back is not a reason


def clip(text: str, limit: int = 60) -> str:
    """Quote a piece of a bad input, shortened so that a huge line stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FormatError(GapkitError):
    """One bad file or record: carries where it is and why."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = clip(reason, MAX_REASON)
        where = clip(self.path, MAX_REASON) + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {self.reason}")

    def problem(self) -> Problem:
        return Problem(path=self.path, line=self.line, reason=self.reason)


# What a Problem is: a bad input ("bad"), an exception gapkit did not expect while reading one
# record ("internal": a bug, reported with its traceback, the run goes on), or an entry that is
# not a face and is skipped on purpose ("not_a_face": counted, not an error).
PROBLEM_KINDS = ("bad", "internal", "not_a_face")


@dataclass(frozen=True)
class Problem:
    """A bad file or record that a bulk job skipped. ``line`` is the file's line, or the
    0-based index of the annotation or entry in a one-file format (the reason says which)."""

    path: str
    line: int | None
    reason: str
    kind: str = "bad"
    detail: str | None = None  # the traceback of an internal error

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "line"}


def internal_problem(path: str | Path, line: int | None, exc: BaseException) -> Problem:
    """An unexpected exception while reading one record, as a Problem: the run goes on, and the
    exit code and report say that gapkit, not the input, failed there."""
    reason = clip(f"internal error ({type(exc).__name__}: {exc}); please report it", MAX_REASON)
    return Problem(str(path), line, reason, kind="internal",
                   detail="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


class StrictStop(GapkitError):
    """--strict: the first problem stops the job."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))
