"""Writing files so that no failure leaves a half-written or destroyed one.

Every file molgen writes goes through :func:`atomic_path`: the data go to a temporary file in the
same folder, which replaces the target only once it is complete (``os.replace`` is atomic on one
file system). A refused option, an exception, Ctrl-C or a kill therefore leaves an existing file as
it was, and a reader never sees a file that is half there. JSON goes through :func:`write_json`,
which writes strict JSON: ``NaN`` and infinities become ``null`` (Python's ``json`` would write
bare ``NaN``, which other languages' parsers refuse).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_json", "strict_json", "same_file", "read_toml"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on a clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. The temporary
    name keeps the target's suffixes (``out.tmp-123.csv.gz``) so writers that pick a format or a
    compression from the suffix behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    stem, dot, rest = name.partition(".")
    tmp = path.with_name(f".{stem}.tmp-{os.getpid()}{dot}{rest}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def strict_json(obj):
    """``obj`` with every float NaN or infinity replaced by ``None`` (recursively in dicts and lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return strict_json(obj.item())
    return obj


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (``null`` for NaN), atomically; returns the path."""
    text = json.dumps(strict_json(obj), indent=indent, allow_nan=False, default=str)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (through links and relative paths); False if ``b`` is missing."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def read_toml(path: str | os.PathLike, what: str, example: str) -> tuple[dict, str]:
    """``(data, text)`` of a TOML file, or one :class:`~molgen.errors.ConfigError` line that says why not.

    ``what`` names the kind of file in the messages ("run config"), ``example`` where one is found
    ("scripts/configs/*.toml"): a folder, a missing or unreadable file, a binary file and bad TOML
    each get their own sentence, never a traceback.
    """
    import sys

    from molgen.errors import ConfigError

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text), text
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder: pass a {what} TOML file ({example})") from None
    except OSError as err:
        raise ConfigError(f"{what} file {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a TOML text file (it is not UTF-8); pass a {what} such as {example}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
