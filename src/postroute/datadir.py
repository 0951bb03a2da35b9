"""The data directory is private to the user that runs Postroute.

It holds the SQLite database (message content, hashed API keys, encrypted relay
passwords), the generated secret key and the self-signed TLS key. The directory is
created 0700 and the database file 0600, created empty before SQLite opens it: SQLite
gives the ``-wal`` and ``-shm`` files it creates (again after each checkpoint that
removed them) the database file's mode, whatever the umask. A data dir or file left
readable by others (made by an earlier version, or copied) is made private at start-up,
with a warning naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("postroute")

DIR_MODE = 0o700
FILE_MODE = 0o600
DATABASE_FILE = "postroute.db"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# Written by smtp/tls.py (the self-signed pair; the certificate itself is public).
TLS_DIR, TLS_KEY_FILE = "tls", "smtp-key.pem"
TRACKING_DIR = "tracking"  # the journal of tracking hits not yet recorded (tracking/)
_OURS = {DATABASE_FILE, SECRET_KEY_FILE, TLS_DIR, TRACKING_DIR} | {
    DATABASE_FILE + s for s in SQLITE_COMPANIONS
}


def _ours(name: str) -> bool:
    return name in _OURS or name.startswith(".tls-")  # a staging dir of smtp/tls.py


def ensure_dir(path: Path) -> None:
    """Create the data dir (0700), or make an existing one and its secrets private."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(f"data dir {path} is not a directory") from None
        _private_dir(path)
    for secret in (path / SECRET_KEY_FILE, path / TLS_DIR, path / TLS_DIR / TLS_KEY_FILE):
        if secret.exists():
            _private(secret)


def ensure_database_file(path: Path) -> None:
    """Before SQLite opens ``path``: create it empty with mode 0600 (SQLite takes an
    empty file as a new database), or make it and its -wal/-shm/-journal private."""
    if path.parent.is_dir():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for file in (path, *(Path(f"{path}{s}") for s in SQLITE_COMPANIONS)):
        if file.exists():
            _private(file)


def missing_message(path: Path, from_setting: bool) -> str:
    """What a command says when the data dir it needs is not there."""
    where = "POSTROUTE_DATA_DIR" if from_setting else "the default: ./postroute-data"
    return (
        f"no data dir at {path.resolve()} ({where}); nothing was created. Run the command "
        "in the directory where you ran `postroute init`, or set POSTROUTE_DATA_DIR to the "
        "data dir it made (or POSTROUTE_DATABASE_URL to the database); `postroute init` "
        "starts a new one"
    )


def _private_dir(path: Path) -> None:
    """The data dir itself: 0700, unless it also holds files that are not Postroute's
    (say POSTROUTE_DATA_DIR=/srv): then only a warning, the operator decides."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    others = sorted(p.name for p in path.iterdir() if not _ours(p.name))
    if others:
        log.warning(
            "data dir %s is %04o (readable by others) and holds other files (%s): not "
            "changed; make it private with: chmod 700 %s",
            path.absolute(),
            mode,
            ", ".join(others[:3]),
            path.absolute(),
        )
        return
    _chmod(path, mode, DIR_MODE, "data dir")


def _private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _chmod(path, mode, mode & 0o700, "dir" if path.is_dir() else "file")


def _chmod(path: Path, was: int, now: int, what: str) -> None:
    try:
        os.chmod(path, now)
    except OSError as exc:  # not our file: say so and go on (opening may fail later)
        reason = exc.strerror or exc
        where = path.absolute()
        log.warning("%s %s is %04o (readable by others), unchanged: %s", what, where, was, reason)
        return
    log.warning("%s %s was %04o: now %04o", what, path.absolute(), was, now)
