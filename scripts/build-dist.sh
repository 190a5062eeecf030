#!/bin/sh
# The sdist and the wheel into ${1:-dist}/, then a check that the wheel carries what the server reads at
# run time. The Docker image's build stage runs this; so does `make dist`. Needs $PYTHON (default
# python3) with the `build` package, and npm unless static/vendor/ is already built from the lock file.
#
# `python -m build` makes the sdist first (setup.py builds static/vendor/ with `npm ci` when it is missing
# or older than package-lock.json) and then the wheel from the unpacked sdist, so a file the sdist lacks
# is missing from the wheel too, and the check below catches it.
set -eu
cd "$(dirname "$0")/.."
out="${1:-dist}"
python="${PYTHON:-python3}"

rm -f "$out"/steerboard-*.whl "$out"/steerboard-*.tar.gz
"$python" -m build --outdir "$out" .

"$python" - "$out" <<'PY'
import sys
import zipfile
from pathlib import Path

(wheel,) = Path(sys.argv[1]).glob("steerboard-*.whl")
names = set(zipfile.ZipFile(wheel).namelist())
needed = [
    "server/alembic.ini", "server/migrations/env.py", "server/migrations/script.py.mako",
    "server/templates/base.html", "server/static/css/app.css", "server/static/js/app.js",
    "server/static/vendor/htmx.min.js", "server/static/vendor/htmx-ext-sse.min.js",
    "server/static/vendor/plotly-basic.min.js", "server/static/vendor/swagger-ui-bundle.js",
    "server/static/vendor/swagger-ui.css", "server/py.typed", "trainer_agent/py.typed",
]
missing = [n for n in needed if n not in names]
migrations = [n for n in names if n.startswith("server/migrations/versions/") and n.endswith(".py")]
if missing or not migrations:
    sys.exit(f"{wheel.name} lacks {missing or 'the migration versions'}")
print(f"{wheel.name}: {len(names)} files, templates, static (vendor JS built), {len(migrations)} migrations")
PY
