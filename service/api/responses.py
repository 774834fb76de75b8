"""The error answers of the OpenAPI schema: ``{"detail": ...}``, as FastAPI answers them.

``detail`` is a string naming the field and why (``"n: at most 400 samples ..."``), or for a request
that does not match the schema FastAPI's list of validation errors, each with the field's ``loc``.
"""

from typing import Any

from pydantic import BaseModel


class ValidationIssue(BaseModel):
    """One validation error: where (``["body", "thresholds", "dice"]``), what and which rule."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every 4xx and 503 answer."""

    detail: str | list[ValidationIssue]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that may answer these error codes."""
    return {code: {"model": ErrorBody, "description": "What is wrong: the field and why"} for code in codes}
