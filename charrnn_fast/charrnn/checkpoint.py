"""Checkpoints: atomic writes, safe loads, RNG capture.

A checkpoint is a dict of tensors, primitives, lists and dicts only, so it loads
with `torch.load(weights_only=True)` (no arbitrary code runs from a checkpoint
file) and on any device (`map_location`). Writes go to a temporary file in the
same folder, are fsynced and then renamed over the target, so a crash or Ctrl-C
mid-write leaves the previous checkpoint intact. Loads check the zip archive's
CRC-32 of every record first (torch.load does not), so altered bytes anywhere
in the tensor data are refused, not loaded as wrong weights.
"""

from __future__ import annotations

import errno
import os
import secrets
import zipfile
from pathlib import Path

import torch

from charrnn_fast.charrnn.errors import CheckpointError

CHECKPOINT_FORMAT = "charrnn_fast.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "model_config", "vocab", "config", "step")


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> Path:
    """Write `ckpt` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **ckpt}
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Including KeyboardInterrupt: never leave a half-written temp file behind.
        tmp.unlink(missing_ok=True)
        interrupt = _in_chain(e, KeyboardInterrupt)
        if interrupt is not None and interrupt is not e:
            # torch.save's zip writer turns an interrupt inside its write into a
            # RuntimeError of its own: an abort asked for, not a failed save.
            raise interrupt from None
        full = _disk_full(e)
        if full is not None:
            kept = f"the previous {path.name} is intact" if path.exists() else "it was not written"
            raise CheckpointError(
                f"cannot save {path}: {full.strerror} ({errno.errorcode[full.errno]}); {kept}. "
                "Free some space and continue with --resume"
            ) from e
        raise
    # Persist the rename itself (the directory entry); not possible on every OS.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data is synced
    finally:
        os.close(dir_fd)
    return path


def _in_chain(e: BaseException | None, kind: type) -> BaseException | None:
    """The first exception of type `kind` in `e`'s chain of causes and contexts."""
    while e is not None:
        if isinstance(e, kind):
            return e
        e = e.__cause__ or e.__context__
    return None


def _disk_full(e: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT OSError in `e`'s chain: torch.save reports a failed write
    as a RuntimeError of its zip writer, raised while handling the OSError."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file `.NAME.<random>.tmp` next to `path`, opened for writing.

    Created with mode 0666 less the umask, like log.csv and every other file the
    application writes (tempfile.mkstemp would make it 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of saves that a killed process never finished.

    Call only while holding the folder's lock (charrnn_fast.charrnn.runlock):
    then no other process can be writing them. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# What a training run leaves in its folder, besides its lock; TensorBoard's
# event files go in RUN_FOLDER/tb.
RUN_FILES = ("last.pt", "best.pt", "log.csv", "samples.jsonl", "samples.html")
TB_EVENTS = "tb/events.out.tfevents.*"


def clear_old_run(folder: str | os.PathLike) -> list[Path]:
    """Delete the files an earlier run wrote in checkpoint folder `folder` (and
    nothing else there), so that a new run (--overwrite) leaves no old
    checkpoint, log or sample that a later command could take for its own. Call
    while holding the folder's lock."""
    folder = Path(folder)
    removed = [folder / n for n in RUN_FILES if (folder / n).is_file()]
    removed += sorted(p for p in folder.glob(TB_EVENTS) if p.is_file())
    for p in removed:
        p.unlink()
    return removed


def verify_archive(path: Path) -> None:
    """Raise CheckpointError unless every record of the zip archive matches its CRC-32."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a valid checkpoint (corrupt or truncated?): {e}"
        ) from e
    if bad is not None:
        raise CheckpointError(
            f"{path} is corrupt: record {bad} does not match its CRC-32 checksum "
            "(altered on disk or in transfer); use another checkpoint"
        )


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file from a file or a checkpoint folder (best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"no checkpoint (best.pt or last.pt) in folder {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint (file or folder) with weights_only=True."""
    p = resolve_checkpoint(path)
    verify_archive(p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        # torch.load fails in many ways on a damaged file (zip errors, unpickling
        # errors, EOF, RuntimeError); to the user they all mean one thing.
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{p} is not a valid checkpoint (corrupt or truncated?): {type(e).__name__}: {msg}"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a charrnn_fast checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint version {ckpt.get('version')}, this version reads "
            f"{CHECKPOINT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p} is incomplete (missing {', '.join(missing)})")
    check_contents(ckpt, p)
    ckpt["path"] = str(p)
    return ckpt


# The types of a checkpoint's entries, and of its model options.
_NUMBER = (int, float, type(None))
ENTRY_TYPES = {
    "model": dict,
    "model_config": dict,
    "vocab": dict,
    "config": dict,
    "step": int,
    # optional, read on --resume and by compare
    "optimizer": dict,
    "hidden": list,
    "rng": dict,
    "val_loss": _NUMBER,
    "best_val_loss": _NUMBER,
    "elapsed_s": _NUMBER,
}
MODEL_CONFIG_TYPES = {
    "vocab_size": int,
    "rnn_size": int,
    "num_layers": int,
    "model": str,
    "embedding_dim": int,
    "dropout": (int, float),
}


def _wrong_types(d: dict, types: dict, where: str) -> list[str]:
    return [
        f"{where}{k} is {type(d[k]).__name__}"
        for k, t in types.items()
        if k in d and (not isinstance(d[k], t) or isinstance(d[k], bool))
    ]


def _checked_config(config: dict, p: Path) -> dict:
    """The stored training options, checked as the command line checks them, with
    the defaults of options newer than the checkpoint filled in."""
    from charrnn_fast.charrnn.errors import UserError
    from charrnn_fast.charrnn.trainconfig import FIELD_NAMES, TrainConfig

    known = {k: v for k, v in config.items() if k in FIELD_NAMES}
    try:
        full = TrainConfig(**known).validate().to_dict()
    except UserError as e:
        raise CheckpointError(f"{p}: its stored training options are invalid ({e})") from None
    return {**config, **full}


def check_contents(ckpt: dict, p: Path) -> None:
    """CheckpointError unless the entries have their types, the model options
    match the weights' sizes, and every weight is finite."""
    from charrnn_fast.charrnn.sizes import GATES, config_param_count

    wrong = _wrong_types(ckpt, ENTRY_TYPES, "")
    if not wrong:
        wrong = _wrong_types(ckpt["model_config"], MODEL_CONFIG_TYPES, "model_config.")
        wrong += [
            f"model.{k} is {type(v).__name__}"
            for k, v in ckpt["model"].items()
            if not isinstance(v, torch.Tensor)
        ]
    if wrong:
        raise CheckpointError(f"{p} is malformed: {'; '.join(wrong)}")
    mc = ckpt["model_config"]
    try:
        expected = config_param_count(mc) if mc.get("model") in GATES else None
    except KeyError:
        expected = None  # an incomplete model_config: building the model says what lacks
    stored = sum(v.numel() for v in ckpt["model"].values())
    if expected is not None and expected != stored:
        raise CheckpointError(
            f"{p}: its model options ({mc}) make {expected:,} weights but it holds "
            f"{stored:,} (altered, or pieced together from two checkpoints)"
        )
    ckpt["config"] = _checked_config(ckpt["config"], p)
    bad = [k for k, v in ckpt["model"].items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(
            f"{p}: its weights are not finite (NaN or infinity in {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the run that saved it had diverged; "
            "use an earlier checkpoint"
        )


def capture_rng_state() -> dict:
    """RNG states as tensors (weights_only-safe): CPU and, when present, every GPU."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Undo `capture_rng_state`; GPU states only when this machine has GPUs."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda[:n]])
