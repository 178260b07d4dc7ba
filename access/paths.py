"""`ALLOWED_PATHS`: the globs of the paths a relay serves, e.g. `/v1/chat/*,/v1/models` for chat only.

Globs are matched with `fnmatch` against the whole path (`*` also crosses `/`),
case-sensitively. The relay's own pages, which spend nothing upstream, stay open.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from proxy.settings import SettingsError

from .keys import split_list

OPEN_PATHS = frozenset({"/", "/healthz", "/favicon.ico", "/robots.txt"})


class AllowedPaths:
    def __init__(self, globs: list[str]):
        self.globs = tuple(globs)

    @classmethod
    def parse(cls, value: str) -> AllowedPaths:
        globs = split_list(value)
        for glob in globs:
            if not glob.startswith(("/", "*")):
                raise SettingsError(f"ALLOWED_PATHS entry {glob!r} must be a path glob starting with '/'")
        return cls(globs)

    def allows(self, path: str) -> bool:
        if not self.globs or path in OPEN_PATHS:
            return True
        return any(fnmatchcase(path, glob) for glob in self.globs)
