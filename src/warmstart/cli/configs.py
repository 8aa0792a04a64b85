"""Strict configs built from command-line options, with errors that name the options."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from warmstart.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def describe(exc: ValidationError, options: Mapping[str, str], secret: Collection[str] = ()) -> str:
    """Each problem named as the user wrote it (`--method`, not `method`); the values of
    `secret` fields (API keys) are never echoed."""
    problems = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else None
        if field is None:
            problems.append(str(error["msg"]))
            continue
        name = options.get(field, field)
        given = "" if field in secret else f" (got {error.get('input')!r})"
        problems.append(f"{name}: {error['msg']}{given}")
    return "; ".join(problems)


def build_config(
    cls: type[C],
    values: Mapping[str, Any],
    options: Mapping[str, str],
    secret: Collection[str] = (),
) -> C:
    """`cls` validated from `values`; a `ConfigError` instead of pydantic's multi-line report,
    since these values are the user's options, not a bug."""
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(describe(exc, options, secret)) from None
