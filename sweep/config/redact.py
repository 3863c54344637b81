"""Credentials never reach MLflow or the output folder: values under keys that look like
secrets are replaced before anything is logged or written."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
_SECRET_KEY = re.compile(
    # "pass" alone only as a whole word part (db_pass), so that "compass" stays visible.
    r"passw(or)?d|(^|[_-])pass$|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credential|auth",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(node: Any) -> Any:
    """A copy of ``node`` with every secret-looking key's value replaced by ``***``."""
    if isinstance(node, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v is not None else redact(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat
