"""One router per resource; routes parse, call the store or a service, and answer.

A run name may hold any printable character, '/' included (percent-encoded or not: the server sees
the decoded path). Routes take it with `{run:path}` when something follows it (`/api/runs/{run:path}/series`:
the longest name that leaves the suffix) and with `{run:run}` when the path ends with it: that
convertor refuses a name ending in one of RUN_SUFFIXES, so `/api/runs/a/b/series` reaches the series
of run `a/b` whatever order the routers are matched in. The one cost: a run whose name ends in
`/series`, `/commands`... is reachable only through those sub-routes.
"""

from __future__ import annotations

import re

from starlette.convertors import Convertor, register_url_convertor

# The last path segment of every route that follows a run name (API and pages).
RUN_SUFFIXES = ("series", "parts", "metrics", "warm-start", "steps", "timestamps", "evals", "commands", "actions",
                "events", "export.csv", "diagnoses", "manage", "tags", "note", "archive", "delete", "scheduler",
                "preview")


class RunNameConvertor(Convertor[str]):
    regex = r"(?:(?!/(?:" + "|".join(re.escape(s) for s in RUN_SUFFIXES) + r")$).)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("run", RunNameConvertor())
