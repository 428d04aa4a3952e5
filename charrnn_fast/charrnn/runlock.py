"""One writer per checkpoint folder: an OS lock held for a whole training run.

`train` takes an exclusive `flock` on CHECKPOINT_DIR/train.lock before it reads
or writes anything there, and holds it until it ends. A second run on the same
folder is refused with the holder's pid and host, which the holder writes into
the lock file. The kernel drops the lock when its holder dies, even by
`kill -9`, so a crash never leaves the folder locked (a stale file with an old
pid may stay; it locks nothing). Under DDP only rank 0 writes, so rank 0 alone
takes the lock; the other ranks stop with it when it is refused.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from charrnn_fast.charrnn.errors import CheckpointError, UserError

if TYPE_CHECKING:  # torch only where training needs it: `prepare` locks too
    import torch

    from charrnn_fast.charrnn import distributed as ddp

LOCK_NAME = "train.lock"


def _open_locked(path: Path, what: str, option: str) -> int:
    """An fd holding an exclusive flock on `path`; CheckpointError when another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "pid unknown"
            os.close(fd)
            raise CheckpointError(
                f"{path.parent} is in use by another {what} ({holder}); wait for it "
                f"to finish, stop it, or use another {option}"
            ) from None
        # The previous holder removes the file as it leaves; if that happened
        # between our open and our flock, our lock is on a file nobody else can
        # find: start over on the new one.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


@contextmanager
def folder_lock(
    folder: str | os.PathLike,
    name: str = LOCK_NAME,
    what: str = "training run",
    option: str = "--checkpoint_dir",
    cleanup: Callable[[Path], list[Path]] | None = None,
) -> Iterator[None]:
    """Hold the lock `name` of folder `folder` (created if missing) for the block.

    `what` and `option` name the holder and the option that picks the folder in
    the refusal; `cleanup(folder)` removes what a killed holder left unfinished."""
    folder = Path(folder)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, what, option)
    except OSError as e:  # read-only or foreign folder, a file in the way, ...
        where = "checkpoint" if option == "--checkpoint_dir" else "output"
        raise CheckpointError(
            f"cannot write to the {where} folder {folder}: {e.strerror or e}"
        ) from e
    try:
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode(), 0)
        orphans = cleanup(folder) if cleanup is not None else []
        if orphans:
            print(
                f"removed {len(orphans)} unfinished file(s) of an earlier run "
                f"that was killed while saving ({', '.join(p.name for p in orphans)})",
                file=sys.stderr,
            )
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock: see _open_locked
        os.close(fd)


@contextmanager
def rank0_folder_lock(
    folder: str | os.PathLike, info: ddp.DistInfo, device: torch.device
) -> Iterator[None]:
    """`folder_lock` on rank 0 (removing the temporary files of saves a killed run
    left); every rank fails together when rank 0 is refused."""
    from charrnn_fast.charrnn import distributed as ddp
    from charrnn_fast.charrnn.checkpoint import remove_orphans

    with ExitStack() as stack:
        error: UserError | None = None
        if info.is_main:
            try:
                stack.enter_context(folder_lock(folder, cleanup=remove_orphans))
            except UserError as e:
                error = e
        if ddp.broadcast_flag(error is not None, info, device):
            raise error or UserError(f"rank 0 could not lock {folder}; see its error")
        yield
