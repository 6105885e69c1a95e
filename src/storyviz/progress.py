"""Progress bars that `--quiet` silences everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """`tqdm` with storyviz defaults (stderr, rate and ETA), disabled by `--quiet`."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    disable = kwargs.pop("disable", False)
    return tqdm(iterable, disable=_quiet or disable, **kwargs)


def say(message: str) -> None:
    """A status line on stderr unless quiet."""
    if not _quiet:
        tqdm.write(message)
