"""The constructor's drafts, kept by the master: `<master data dir>/drafts/NAME.json`.

A draft is whatever the dashboard's constructor keeps of a pipeline being drawn (its
steps, edges and positions: any JSON); the master names it, dates it and keeps it, so a
reload, another browser or a master restart finds it.  Each is one file, written whole or
not at all (titan/datadir.py `write_file`, mode 0600), holding {"name", "updated_at",
"draft"}.  Names are 1-100 of letters, digits, `_`, `.`, `-`; at most `limit` drafts.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

from titan.datadir import write_file

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
LIMIT = 1000
SUFFIX = ".json"


class DraftError(ValueError):
    """A name that is not one, or one draft too many (`full`)."""

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise DraftError(f"a draft's name is 1-100 of letters, digits, '_', '.' or '-', "
                         f"not {name!r}")
    return name


class Drafts:
    """The drafts in `directory` (made when the first one is saved)."""

    def __init__(self, directory: str, limit: int = LIMIT) -> None:
        self.directory = directory
        self.limit = limit

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, check_name(name) + SUFFIX)

    def _read(self, path: str) -> Optional[dict]:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            return None
        return record

    def _names(self) -> list[str]:
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [e[:-len(SUFFIX)] for e in entries
                if e.endswith(SUFFIX) and NAME.match(e[:-len(SUFFIX)])]

    def list(self) -> list[dict]:
        """{"name", "updated_at", "steps"} of every draft, the latest saved first."""
        out = []
        for name in self._names():
            record = self._read(os.path.join(self.directory, name + SUFFIX))
            if record is None:
                continue
            draft = record.get("draft")
            steps = draft.get("steps") if isinstance(draft, dict) else None
            out.append({"name": name, "updated_at": record.get("updated_at") or 0.0,
                        "steps": len(steps) if isinstance(steps, list) else 0})
        out.sort(key=lambda d: (d["updated_at"], d["name"]), reverse=True)
        return out

    def get(self, name: str) -> Optional[dict]:
        """{"name", "updated_at", "draft"}, or None if there is no such draft."""
        record = self._read(self._path(name))
        if record is None:
            return None
        return {"name": name, "updated_at": record.get("updated_at") or 0.0,
                "draft": record.get("draft")}

    def put(self, name: str, draft: Any, now: float) -> dict:
        """Save (or replace) a draft; DraftError(full=True) for a new one past the limit."""
        path = self._path(name)
        if not os.path.exists(path) and len(self._names()) >= self.limit:
            raise DraftError(f"there are {self.limit} drafts already, the most the master "
                             "keeps: delete some first", full=True)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_file(self.directory, name + SUFFIX,
                   json.dumps({"name": name, "updated_at": now, "draft": draft},
                              separators=(",", ":")))
        return {"name": name, "updated_at": now}

    def delete(self, name: str) -> bool:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return False
        return True
