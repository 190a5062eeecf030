"""Where the server's files that are not Python are: templates/, static/, migrations/, alembic.ini.

An installed wheel carries them inside this package (server/templates, ...; setup.py puts them there).
A source checkout, and so the editable install `make` does, keeps them at the repository's top level,
beside this package. Either way they are found from the package, never from the working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def package_path(name: str) -> Path:
    """The file or folder `name` ("templates", "static", "migrations", "alembic.ini") of this install."""
    packaged = files(__package__ or "server") / name
    # pip installs wheels unpacked, so the package's files are real paths (Jinja2, Starlette's
    # StaticFiles and Alembic all need one).
    if isinstance(packaged, Path) and packaged.exists():
        return packaged
    source = _SOURCE_ROOT / name
    if source.exists():
        return source
    raise FileNotFoundError(
        f"{name} is neither in the installed server package ({packaged}) nor beside it ({source}); "
        "reinstall steerboard from its wheel or sdist"
    )
