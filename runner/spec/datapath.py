"""Is a `data.<name>.path` a local file or a hub dataset id, and can ftlab read it?

One rule for `ftlab validate` (`anchors.anchor_data_paths`) and the reader (`runner/data.py`):
a name that can only be a file is never sent to the hub, so a typo'd suffix (`d.jsnl`) is
a spec problem at once instead of five hub retries and "not on the hub".
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePosixPath

LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
EXPECTED = "/".join(LOCAL_DATA_SUFFIXES)
# a file-type suffix: a letter, then up to 7 letters or digits (.jsonl, .txt, .jsnl) —
# not a version (`…-v1.1`, `Qwen2.5-…`), which hub ids do carry
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


def user_path(text: str | Path) -> Path:
    """`~/x` and `~user/x` expanded; a `~name` that is no user stays as written (pathlib
    raises RuntimeError there; the caller then reports the file as missing)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def looks_like_file(path: str) -> bool:
    """True for a name that can only be a local file: a file-type suffix, a start in `.`,
    `/` or `~`, a backslash, or more than one `/` (hub ids are `name` or `owner/name`)."""
    if path.startswith((".", "/", "~")) or "\\" in path or path.count("/") > 1:
        return True
    return bool(_FILE_SUFFIX.search(PurePosixPath(path).name))


def unsupported_type(path: Path) -> str | None:
    """ "unsupported file type '.txt'" for a file ftlab cannot read, else None."""
    if path.suffix.lower() in LOCAL_DATA_SUFFIXES:
        return None
    return f"unsupported file type {repr(path.suffix) if path.suffix else '(no suffix)'}"


def type_hint(path: Path, *, written: str) -> str:
    """What to do about an unsupported suffix: the close suffix (and the file it names, if
    that one exists), or what each supported type holds."""
    close = difflib.get_close_matches(path.suffix.lower(), LOCAL_DATA_SUFFIXES, n=1, cutoff=0.6)
    if close and path.with_suffix(close[0]).is_file():
        fixed = str(PurePosixPath(written).with_suffix(close[0]))
        return f"Did you mean '{fixed}'? (that file exists)"
    if close:
        return f"Did you mean '{close[0]}'?"
    return (
        f"ftlab reads {EXPECTED} files: .jsonl = one JSON object per line, .json = a list "
        "of objects, .csv with a header row, .parquet; convert the file or rename it"
    )
