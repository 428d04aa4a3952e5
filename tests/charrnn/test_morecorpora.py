"""`charrnn-fast prepare names|latex` on small archives the tests build themselves
(no network): a names sdist, a .deb (an ar archive around data.tar.xz) and a
folder of TeX files."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest

from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.corpora import prepare_source
from charrnn_fast.charrnn.data import load_prepared
from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.morecorpora import deb_data_member, first_names, latex_source

MALE = "JAMES          3.318  3.318      1\nJOHN           3.271  6.589      2\nJEAN  0.1 0.1 3\n"
FEMALE = "MARY           2.629  2.629      1\nJEAN           0.1    2.7        2\n"
TEX = {
    "./usr/share/texlive/texmf-dist/tex/latex/demo/demo.sty": "\\ProvidesPackage{demo}\n",
    "./usr/share/texlive/texmf-dist/source/latex/demo/demo.dtx": "% \\iffalse\n%</driver>\n",
    "./usr/share/doc/demo/guide.tex": "\\section{Caf\u00e9}\n$x^2$\n",
    "./usr/share/doc/demo/README": "not TeX, not taken\n",
    "./usr/share/doc/demo/latin1.tex": b"caf\xe9\n",  # not UTF-8: skipped
}


def _tar(files: dict[str, str | bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, text in files.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def make_deb(path: Path, files: dict[str, str | bytes], data_name: str = "data.tar.xz") -> Path:
    data = _tar(files, "w")
    if data_name.endswith(".xz"):
        data = lzma.compress(data)
    path.write_bytes(
        _ar({"debian-binary": b"2.0\n", "control.tar.xz": lzma.compress(b""), data_name: data})
    )
    return path


def make_names_sdist(path: Path) -> Path:
    files = {
        "names-0.3.0/names/dist.male.first": MALE,
        "names-0.3.0/names/dist.female.first": FEMALE,
        "names-0.3.0/names/dist.all.last": "SMITH 1.0 1.0 1\n",
        "names-0.3.0/setup.py": "",
    }
    path.write_bytes(_tar(files, "w:gz"))
    return path


def test_names_are_distinct_title_case_first_names_in_a_fixed_shuffle(tmp_path, capsys):
    sdist = make_names_sdist(tmp_path / "names-0.3.0.tar.gz")
    names = first_names(sdist)
    assert sorted(names) == ["James", "Jean", "John", "Mary"]  # no surnames, no repeats
    assert first_names(sdist) == names
    out = tmp_path / "data"
    argv = ["prepare", "names", "--sdist", str(sdist), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "4 first names from names-0.3.0.tar.gz" in capsys.readouterr().out
    data = load_prepared(out)
    assert data.vocab.decode(data.tokens) == "\n".join(names) + "\n"


def test_latex_from_a_deb_keeps_tex_sty_dtx_in_archive_order(tmp_path, capsys):
    deb = make_deb(tmp_path / "texlive-demo_1_all.deb", TEX)
    assert deb_data_member(deb)[0] == "data.tar.xz"
    out = tmp_path / "data"
    argv = ["prepare", "latex", "--deb", str(deb), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "skipped 1 binary file(s)" in capsys.readouterr().out  # latin1.tex
    data = load_prepared(out)
    want = "".join(v for k, v in TEX.items() if k.endswith((".sty", ".dtx", "guide.tex")))
    assert data.vocab.decode(data.tokens) == want


def test_latex_from_a_folder(tmp_path):
    root = tmp_path / "tree"
    for name, text in TEX.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
    source = latex_source([root])
    with pytest.raises(CorpusError):  # the Latin-1 file, unless skipping is on
        source.skip_binary = False
        prepare_source(source, tmp_path / "data", progress=False)
    source.skip_binary = True
    meta = prepare_source(source, tmp_path / "data", progress=False)
    assert meta["documents"] == 3 and meta["num_skipped"] == 1


def test_latex_errors(tmp_path, capsys):
    (tmp_path / "not.deb").write_text("hello")
    zst = make_deb(tmp_path / "z.deb", TEX, data_name="data.tar.zst")
    (tmp_path / "empty").mkdir()
    for deb, needle in [
        (tmp_path / "missing.deb", "no such file or folder"),
        (tmp_path / "not.deb", "not a .deb package"),
        (zst, "zstd"),
        (tmp_path / "empty", "no .tex, .sty or .dtx files"),
    ]:
        argv = ["prepare", "latex", "--deb", str(deb), "--out", str(tmp_path / "o")]
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("charrnn-fast: error:") == 1 and needle in err, err
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not gzip")
    assert main(["prepare", "names", "--sdist", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable source archive" in capsys.readouterr().err
