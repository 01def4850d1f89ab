"""The app's routes by path template, from its OpenAPI schema: which methods a path accepts
(the ``Allow`` header of a 405) and the tags of the route a request goes to (the API key
check runs before routing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PARAM = re.compile(r"\{[^}/]+\}")


@dataclass(frozen=True)
class RouteEntry:
    pattern: re.Pattern[str]
    tags: dict[str, frozenset[str]]
    """method (upper case) -> the operation's tags."""


def route_index(app: Any) -> list[RouteEntry]:
    """Every documented path of ``app`` (built once per app)."""
    index: list[RouteEntry] | None = getattr(app.state, "route_index", None)
    if index is None:
        index = [
            RouteEntry(
                _pattern(path),
                {m.upper(): frozenset(op.get("tags", ())) for m, op in operations.items()},
            )
            for path, operations in app.openapi()["paths"].items()
        ]
        app.state.route_index = index
    return index


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods some route accepts on ``path`` (HEAD wherever GET is)."""
    methods: set[str] = set()
    for entry in route_index(app):
        if entry.pattern.match(path):
            methods |= set(entry.tags)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def route_tags(app: Any, method: str, path: str) -> frozenset[str]:
    """Tags of the route ``method path`` goes to (empty when none)."""
    for entry in route_index(app):
        if entry.pattern.match(path) and method in entry.tags:
            return entry.tags[method]
    return frozenset()


def _pattern(template: str) -> re.Pattern[str]:
    parts = _PARAM.split(template)
    return re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")
