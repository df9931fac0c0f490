"""One configuration style for every job: Pydantic models that refuse unknown keys and fail
as :class:`~gapkit.errors.ConfigError` with one readable line, never a Pydantic traceback."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from gapkit.errors import ConfigError


def explain(exc: ValidationError) -> str:
    """'field.sub: reason; ...' from a Pydantic error, without its links and type tags."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


class Settings(BaseModel):
    """Base of every configuration model."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"{type(self).__name__}: {explain(exc)}") from None
