"""Where the shipped env cards and configs live, for a checkout and for an installed wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """`kind` is "envs" or "configs".

    A wheel carries them in wmrl/_data/<kind>; an editable install or a checkout reads the
    top-level folder of the repository.
    """
    packaged = _PACKAGE / "_data" / kind
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / kind
