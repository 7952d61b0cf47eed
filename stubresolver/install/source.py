"""What `stubresolver install` puts into the venv by default: this very stubresolver, from
where pip got it (PEP 610 direct_url.json: a wheel, an sdist or a source tree), else the
same version from the package index."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from stubresolver import __version__

_TREE = Path(__file__).resolve().parents[2]  # a source checkout when run from one


def default_spec() -> str:
    try:
        dist = metadata.distribution("stubresolver")
    except metadata.PackageNotFoundError:
        if (_TREE / "pyproject.toml").is_file():
            return str(_TREE)  # run from a checkout without being installed
        return f"stubresolver=={__version__}"
    text = dist.read_text("direct_url.json")
    if text:
        try:
            url = urlparse(str(json.loads(text)["url"]))
        except (ValueError, KeyError, TypeError):
            url = None
        if url is not None and url.scheme == "file" and Path(unquote(url.path)).exists():
            return unquote(url.path)
    return f"stubresolver=={dist.version}"
