"""Build steps pyproject.toml cannot express: what the server needs at run time besides Python.

The repository keeps templates/, static/, migrations/ and alembic.ini at its top level. A wheel carries
them inside the `server` package (server/templates, server/static, server/migrations, server/alembic.ini),
where server/package_data.py finds them; the sdist carries the top-level folders (MANIFEST.in) and
builds its wheel the same way. static/vendor/ (htmx, its SSE extension, Plotly's basic bundle) is built
from package-lock.json by `npm ci`, never committed: `build_vendor` builds it unless it is already newer
than the lock file (`make assets` runs the same command), and both the sdist and the wheel run it first.

An editable install (`pip install -e .`, what `make` does) copies nothing: package_data.py falls back
to the top-level folders beside the package, and `make assets` builds static/vendor/.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from setuptools import Command, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
VENDOR_DIR = ROOT / "static" / "vendor"
NPM_FILES = (ROOT / "package.json", ROOT / "package-lock.json")

# File in node_modules/ -> its name under static/vendor/ (package-lock.json pins the versions).
VENDOR = {
    "htmx.org/dist/htmx.min.js": "htmx.min.js",
    "htmx-ext-sse/dist/sse.min.js": "htmx-ext-sse.min.js",
    # Plotly's official partial bundle (scatter, bar, pie: all the pages draw), a quarter of the full
    # bundle's size and parse time.
    "plotly.js-basic-dist-min/plotly-basic.min.js": "plotly-basic.min.js",
    # The API browser at /docs (FastAPI's default page loads these from a CDN).
    "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css": "swagger-ui.css",
}

# Top-level file or folder -> where the wheel puts it inside the server package.
RESOURCES = {
    "templates": "templates",
    "static": "static",
    "migrations": "migrations",
    "alembic.ini": "alembic.ini",
}
_SKIP = shutil.ignore_patterns("__pycache__", "*.py[cod]")


def _vendor_current() -> bool:
    """static/vendor/ has every file, none older than the npm manifests (make's rule for `make assets`)."""
    built = [VENDOR_DIR / name for name in VENDOR.values()]
    if not all(p.is_file() for p in built):
        return False
    manifests = [p.stat().st_mtime for p in NPM_FILES if p.is_file()]
    return not manifests or min(p.stat().st_mtime for p in built) >= max(manifests)


class build_vendor(Command):
    """Build static/vendor/ from package-lock.json with `npm ci`, unless it is already current."""

    description = "build static/vendor/ (htmx, htmx-ext-sse, Plotly's basic bundle) from package-lock.json"
    user_options: ClassVar[list[tuple[str, str, str]]] = [
        ("force", "f", "run npm ci even when static/vendor/ is current")
    ]
    boolean_options: ClassVar[list[str]] = ["force"]

    def initialize_options(self) -> None:
        self.force = False

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        if not self.force and _vendor_current():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise SetupError(
                "static/vendor/ (htmx, Plotly.js) is missing or older than package-lock.json, and building it "
                "needs npm: install Node.js, or build from the sdist, which carries static/vendor/"
            )
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
        VENDOR_DIR.mkdir(parents=True, exist_ok=True)
        for src, name in VENDOR.items():
            shutil.copyfile(ROOT / "node_modules" / src, VENDOR_DIR / name)


class build_py_with_resources(build_py):
    """build_py, then the server's templates, static files (vendor built), migrations and alembic.ini."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # the editable install reads the top-level folders in place (server/package_data.py)
        self.run_command("build_vendor")
        target = Path(self.build_lib) / "server"
        for src, dst in RESOURCES.items():
            source, dest = ROOT / src, target / dst
            if source.is_dir():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(source, dest, ignore=_SKIP)
            else:
                shutil.copyfile(source, dest)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if self.editable_mode:
            return outputs
        target = Path(self.build_lib) / "server"
        for dst in RESOURCES.values():
            path = target / dst
            outputs += [str(p) for p in path.rglob("*") if p.is_file()] if path.is_dir() else [str(path)]
        return outputs


class sdist_with_vendor(sdist):
    """sdist with static/vendor/ built first, so installing from the sdist needs no npm."""

    def run(self) -> None:
        self.run_command("build_vendor")
        super().run()


setup(cmdclass={"build_vendor": build_vendor, "build_py": build_py_with_resources, "sdist": sdist_with_vendor})
