"""Where molgen keeps derived data (tokenised sets, featurised graphs, reference statistics).

Everything here can be deleted and is rebuilt on demand; entries are keyed by the sha256 of the
data they were derived from, so a changed input never meets a stale cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$MOLGEN_CACHE`` (default ``~/.cache/molgen``) joined with ``parts``, created if missing."""
    root = Path(os.environ.get("MOLGEN_CACHE", Path.home() / ".cache" / "molgen"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_strings(items) -> str:
    """Hex sha256 of a sequence of strings (newline-joined), for in-memory data sets."""
    digest = hashlib.sha256()
    for s in items:
        digest.update(str(s).encode())
        digest.update(b"\n")
    return digest.hexdigest()
