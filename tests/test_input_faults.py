"""Reading user input never ends in a traceback: encodings, missing paths, I/O faults.

Every fault is one ``TaggerError`` line naming the file (and line); at the command line
that is one ``error:`` line on stderr and exit status 1. Read errors (EIO) are injected
with ``strace``; permission errors run the reader as ``nobody`` through ``setpriv``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, conll_text, make_sentences

from tagger import data
from tagger.embeddings import read_vectors
from tagger.errors import TaggerError
from tagger.predict import read_lines

TEXT = "EU B-ORG\nrejects O\n\n“Peter” B-PER\nsaid O\n"  # curly quotes: cp1252 0x93/0x94


def lower(word: str) -> str:
    return word.lower()


def cli(*args: str, stdin=None, prefix: tuple[str, ...] = (), cwd=REPO, timeout=300):
    """Run ``python -m tagger ARGS``; returns (exit status, stdout, stderr)."""
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "tagger", *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
    )
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()


def one_error_line(rc: int, stderr: str, *parts: str) -> str:
    """Exit status 1 and exactly one ``error:`` line on stderr that holds ``parts``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert rc == 1, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------- encodings

BOM_CASES = [
    ("utf-16", codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    ("utf-16", codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
    ("utf-32", codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    ("utf-32", codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
]


@pytest.mark.parametrize(("family", "bom", "codec", "label"), BOM_CASES)
def test_byte_order_marks(tmp_path, family, bom, codec, label):
    path = tmp_path / "wide.txt"
    path.write_bytes(bom + TEXT.encode(codec))
    expected = (
        f"{path}: starts with a {label} byte-order mark; "
        f"pass --encoding {family} (or convert the file to UTF-8)"
    )
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == expected
    with pytest.raises(TaggerError) as err:
        list(read_lines(path))
    assert str(err.value) == expected
    with pytest.raises(TaggerError) as err:  # latin-1 reads any byte, but not this file
        data.read_text(path, "latin-1")
    assert str(err.value) == expected
    # An encoding that fits reads the file, without the mark.
    for encoding in (family, codec):
        assert data.read_text(path, encoding) == TEXT
        assert list(read_lines(path, encoding)) == TEXT.rstrip("\n").split("\n")
    assert [s.tokens for s in data.read_conll(path, encoding=family)][1] == ["“Peter”", "said"]


def test_utf16_lines_stream_in_chunks(tmp_path):
    lines = [f"Zeile {i} – Größe" for i in range(30000)]  # more than one 64 KiB chunk
    path = tmp_path / "big.txt"
    path.write_bytes("\r\n".join(lines).encode("utf-16"))
    assert list(read_lines(path, "utf-16")) == lines


def test_nul_bytes_without_bom(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("EU B-ORG\nrejects O\n".encode("utf-16-le"))  # no byte-order mark
    expected = (
        f"{path}:1: contains NUL bytes; is this a binary file "
        "(or UTF-16 without a byte-order mark)?"
    )
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == expected
    with pytest.raises(TaggerError) as err:
        list(read_lines(path))
    assert str(err.value) == expected
    assert data.read_text(path, "utf-16-le") == "EU B-ORG\nrejects O\n"
    path.write_bytes(b"EU B-ORG\nrejects O\n\nbad\x00 O\n")
    with pytest.raises(TaggerError, match=r":4: contains NUL bytes"):
        data.read_conll(path)


def test_gzip_where_text_is_expected(tmp_path):
    path = tmp_path / "train.txt"  # the name does not say so: the first bytes do
    path.write_bytes(gzip.compress(TEXT.encode()))
    expected = f"{path}: is gzip-compressed; decompress it first (gunzip)"
    for read in (data.read_conll, lambda p: list(read_lines(p))):
        with pytest.raises(TaggerError) as err:
            read(path)
        assert str(err.value) == expected


def test_windows_1252_punctuation(tmp_path):
    path = tmp_path / "cp1252.txt"
    path.write_bytes(TEXT.encode("cp1252"))
    expected = (
        f"{path}:4: byte 0x93 at offset 20 is not valid utf-8; the file looks like "
        "Windows-1252 (0x93 is '“' there): pass --encoding cp1252"
    )
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == expected
    with pytest.raises(TaggerError) as err:
        list(read_lines(path))
    assert str(err.value) == expected
    assert data.read_conll(path, encoding="cp1252")[1].tokens == ["“Peter”", "said"]


def test_windows_1252_found_after_a_latin_letter(tmp_path):
    """The first bad byte is a letter, but a dash later on says Windows-1252, not Latin-1."""
    path = tmp_path / "mixed.txt"
    path.write_bytes("Müller B-PER\n– O\n".encode("cp1252"))
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == (
        f"{path}:1: byte 0xfc at offset 1 is not valid utf-8; the file looks like "
        "Windows-1252 (0x96 is '–' there): pass --encoding cp1252"
    )


def test_utf8_dashes_do_not_suggest_cp1252(tmp_path):
    """A valid UTF-8 dash holds bytes 0x80 and 0x93; only bytes outside UTF-8 count."""
    path = tmp_path / "mixed.txt"
    path.write_bytes("– O\n".encode() + "Müller B-PER\n".encode("latin-1"))
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == (
        f"{path}:2: byte 0xfc at offset 7 is not valid utf-8; "
        "if the file is Latin-1, pass --encoding latin-1"
    )


def test_unknown_encoding_in_every_reader(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("EU B-ORG\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="^unknown encoding 'klingon'$"):
        list(read_lines(path, "klingon"))
    with pytest.raises(TaggerError, match="^unknown encoding 'klingon'$"):
        data.read_source(path, encoding="klingon")


# --------------------------------------------------------------------- labels: the exact line


def test_invalid_tag_names_its_own_line(tmp_path):
    # BOM, CRLF, -DOCSTART- and blank lines first; the bad tag is the 3rd token.
    text = "\ufeff-DOCSTART- O\r\n\r\nEU B-ORG\r\n\r\nPeter B-PER\r\nSmith I-PER\r\nsaid X-PER\r\n"
    path = tmp_path / "tags.txt"
    path.write_bytes(text.encode())
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert str(err.value) == (
        f"{path}:7: tag 'X-PER' is not valid: expected O, or B-, I-, E- or S- followed by a type"
    )


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
def test_unseen_label_names_the_token_line(tmp_path, scheme):
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects O\n", encoding="utf-8")
    # The sentence starts on line 3; its 3rd token (line 5) has a type train lacks.
    dev = tmp_path / "dev.txt"
    dev.write_text("EU B-ORG\n\nThe O\nfair O\nBerlin B-LOC\nshow O\n", encoding="utf-8")
    with pytest.raises(TaggerError) as err:
        data.load_data(tmp_path, scheme=scheme)
    assert str(err.value) == (
        f"{dev}:5: label B-LOC: entity type LOC does not occur in the training data; "
        "fix the data or map such labels to O (--unseen-labels O)"
    )
    sentences = data.read_conll(dev)
    assert sentences[1].origin == f"{dev}:3" and sentences[1].lines == [3, 4, 5, 6]


def test_unseen_label_in_a_hub_split_names_the_token():
    corpus = data.RawCorpus(
        splits={
            "train": [data.Sentence(["EU"], ["B-ORG"], "hub train row 0")],
            "test": [data.Sentence(["a", "b", "Bonn"], ["O", "O", "B-LOC"], "hub test row 7")],
        }
    )
    with pytest.raises(TaggerError, match=r"^hub test row 7 token 3: label B-LOC: "):
        data.to_dataset_dict(corpus)


# --------------------------------------------------------------------- local paths, no hub


@pytest.fixture
def no_hub(monkeypatch):
    """``datasets.load_dataset`` that records its calls and fails the way a test can see."""
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append(args)
        raise AssertionError("hub called")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize(
    "source",
    [
        "./missing/train.txt",
        "a/b/c",
        "foo.conll",
        "corpus.jsonl",
        "data.tsv",
        "eng.train",
        "train.txt.gz",
        "~/surely/not/here",
    ],
)
def test_missing_local_paths_skip_the_hub(no_hub, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(TaggerError, match=r": no such file or folder$") as err:
        data.read_source(source)
    assert time.perf_counter() - start < 2
    assert no_hub == []
    assert "~" not in str(err.value)  # the home folder is expanded
    assert str(err.value).startswith(os.path.normpath(os.path.expanduser(source)))


def test_owner_name_is_a_hub_id(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaggerError, match="hub called"):
        data.read_source("owner/name")
    assert no_hub == [("owner/name",)]


def test_existing_local_folder_wins_over_a_hub_id(no_hub, tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    (tmp_path / "owner" / "name" / "train.txt").write_text("EU B-ORG\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert data.read_source("owner/name").splits["train"][0].tokens == ["EU"]
    assert no_hub == []


def test_home_folder_is_expanded(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_text("EU B-ORG\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path))
    corpus = data.read_source("~/train.txt", dev="~/train.txt")
    assert corpus.sources == {
        "train": str(tmp_path / "train.txt"),
        "validation": str(tmp_path / "train.txt"),
    }


def test_dev_and_test_are_checked_before_the_hub(no_hub, tmp_path):
    with pytest.raises(TaggerError) as err:
        data.read_source("owner/name", dev=tmp_path / "dev.txt")
    assert str(err.value) == f"{tmp_path / 'dev.txt'}: no such file"
    with pytest.raises(TaggerError) as err:
        data.read_source("owner/name", test=tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, expected a text file"
    assert no_hub == []


def test_file_where_a_folder_is_expected(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("EU B-ORG\n", encoding="utf-8")
    with pytest.raises(TaggerError) as err:
        data.read_source(train / "dev.txt")
    assert str(err.value) == (
        f"{train / 'dev.txt'}: no such file or folder ({train} is a file, not a folder)"
    )
    with pytest.raises(TaggerError) as err:
        data.read_source(tmp_path, dev=train / "dev.txt")
    assert str(err.value) == f"{train / 'dev.txt'}: no such file ({train} is a file, not a folder)"


def test_broken_symlink(tmp_path):
    link = tmp_path / "train.txt"
    link.symlink_to(tmp_path / "gone.txt")
    with pytest.raises(TaggerError) as err:
        data.read_source(link)
    assert str(err.value) == f"{link}: no such file or folder (a broken symbolic link)"


# --------------------------------------------------------------------- stdin


class FailingStream(io.RawIOBase):
    """A binary stream whose reads fail with ``err`` after ``good`` bytes."""

    def __init__(self, err: OSError, good: bytes = b""):
        self.err, self.good = err, good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.good:
            n = min(len(buffer), len(self.good))
            buffer[:n], self.good = self.good[:n], self.good[n:]
            return n
        raise self.err


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (OSError(5, "Input/output error"), "Input/output error"),
        (BrokenPipeError(32, "Broken pipe"), "Broken pipe"),
    ],
)
@pytest.mark.parametrize("good", [b"", b"first line\nsecond"])
def test_stdin_read_errors(monkeypatch, err, reason, good):
    stdin = io.TextIOWrapper(io.BufferedReader(FailingStream(err, good)))
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(TaggerError) as caught:
        list(read_lines("-"))
    assert str(caught.value) == f"<stdin>: cannot read: {reason}"


def test_stdin_closed(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(TaggerError, match="^<stdin>: cannot read: standard input is closed$"):
        list(read_lines("-"))


def test_stdin_encodings(monkeypatch):
    def feed(raw: bytes):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))

    feed(codecs.BOM_UTF16_LE + "Paris\n".encode("utf-16-le"))
    with pytest.raises(TaggerError, match="^<stdin>: starts with a UTF-16 LE byte-order mark; "):
        list(read_lines("-"))
    feed(codecs.BOM_UTF16_LE + "Paris\nOslo\n".encode("utf-16-le"))
    assert list(read_lines("-", "utf-16")) == ["Paris", "Oslo"]
    feed(gzip.compress(b"Paris\n"))
    with pytest.raises(TaggerError, match=r"^<stdin>: is gzip-compressed; decompress it first"):
        list(read_lines("-"))
    feed(b"ok\n\xe2\x80\x9cquoted\x94 text\n")  # UTF-8 open quote, cp1252 close quote
    with pytest.raises(
        TaggerError, match=r"^<stdin>:2: byte 0x94 at offset 12 .*--encoding cp1252$"
    ):
        list(read_lines("-"))


def test_short_stdin_lines(monkeypatch):
    """The first bytes are read ahead (for the checks) without losing or merging lines."""
    for raw, lines in [
        (b"", []),
        (b"a", ["a"]),
        (b"a\n", ["a"]),
        (b"\n\nb\n", ["", "", "b"]),
        (b"ab\ncd\r\nefgh", ["ab", "cd", "efgh"]),
        (b"\xef\xbb\xbfx\ny", ["x", "y"]),
    ]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
        assert list(read_lines("-")) == lines


# --------------------------------------------------------------------- embeddings


def test_vectors_non_finite(tmp_path):
    path = tmp_path / "vec.txt"
    for value in ("nan", "inf", "-inf", "NaN", "1e39"):  # 1e39 overflows float32
        path.write_text(f"a 1 2\nb 0.5 {value}\n", encoding="utf-8")
        with pytest.raises(TaggerError) as err:
            read_vectors(path, {"a", "b"})
        assert str(err.value) == f"{path}:2: non-finite value in the vector of 'b'"
    path.write_text("a 1 2\nB 0.5 nan\n", encoding="utf-8")
    with pytest.raises(TaggerError, match=r":2: non-finite value in the vector of 'B'$"):
        read_vectors(path, {"B"})


def test_vectors_gzip_by_magic_not_by_name(tmp_path):
    path = tmp_path / "vectors.txt"  # gzip data without a .gz suffix
    path.write_bytes(gzip.compress(b"2 2\nberlin 0.5 -0.5\noslo 1.5 2.5\n"))
    vec = read_vectors(path, {"oslo"})
    assert vec.total == 2 and vec.vectors["oslo"].tolist() == [1.5, 2.5]
    plain = tmp_path / "plain.vec.gz"  # a .gz suffix on plain text
    plain.write_text("oslo 1 2\n", encoding="utf-8")
    assert read_vectors(plain, {"oslo"}).vectors["oslo"].tolist() == [1, 2]


def test_vectors_truncated_and_damaged_gzip(tmp_path):
    whole = gzip.compress(("".join(f"w{i} 1 2\n" for i in range(5000))).encode())
    path = tmp_path / "vec.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TaggerError) as err:
        read_vectors(path, {"w1"})
    assert str(err.value) == f"{path}: the compressed data ends early (is the file truncated?)"
    path.write_bytes(whole[:12] + b"\xff" * 40 + whole[52:])
    with pytest.raises(TaggerError, match=rf"^{path}: the compressed data is damaged \("):
        read_vectors(path, {"w1"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            codecs.BOM_UTF16_LE + "a 1 2\n".encode("utf-16-le"),
            ": starts with a UTF-16 LE byte-order mark; convert the file to UTF-8 "
            "(iconv -f utf-16 -t utf-8)",
        ),
        (
            "a 1 2\nb 1 2\n".encode("utf-16-le"),
            ":1: contains NUL bytes; is this a binary file (or UTF-16 without a byte-order mark)?",
        ),
        (
            "a 1 2\n„b“ 1 2\n".encode("cp1252"),
            ":2: byte 0x84 at offset 6 is not valid utf-8; the file looks like Windows-1252 "
            "(0x84 is '„' there): convert it to UTF-8 (iconv -f cp1252 -t utf-8)",
        ),
        (
            "a 1 2\nMüller 1 2\n".encode("latin-1"),
            ":2: byte 0xfc at offset 7 is not valid utf-8; if the file is Latin-1, "
            "convert it to UTF-8 (iconv -f latin-1 -t utf-8)",
        ),
    ],
)
def test_vectors_encodings(tmp_path, raw, message):
    for path in (tmp_path / "vec.txt", tmp_path / "vec.txt.gz"):
        path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
        with pytest.raises(TaggerError) as err:
            read_vectors(path, {"a", "b"})
        assert str(err.value) == f"{path}{message}"


def test_vectors_folder_and_bom(tmp_path):
    with pytest.raises(TaggerError) as err:
        read_vectors(tmp_path, {"a"})
    assert str(err.value) == f"{tmp_path}: is a folder, expected a vectors file"
    path = tmp_path / "vec.txt"
    path.write_bytes(b"\xef\xbb\xbf1 2\na 1 2\r\n")  # UTF-8 BOM before the header, CRLF
    vec = read_vectors(path, {"a"})
    assert vec.total == 1 and vec.vectors["a"].tolist() == [1, 2]


# --------------------------------------------------------------------- command line


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(conll_text(make_sentences(8, 0)), encoding="utf-8")
    return path


def test_cli_encoding_diagnoses(tmp_path):
    cases = {
        "bom.txt": (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "UTF-16 BE byte-order mark"),
        "nul.txt": (TEXT.encode("utf-16-le"), ":1: contains NUL bytes"),
        "gz.conll": (gzip.compress(TEXT.encode()), ": is gzip-compressed"),
        "cp.txt": (TEXT.encode("cp1252"), ":4: byte 0x93 at offset 20"),
    }
    for name, (raw, part) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        rc, _, err = cli("data", str(path))
        one_error_line(rc, err, f"error: {path}", part)
    rc, out, err = cli("data", str(tmp_path / "cp.txt"), "--encoding", "cp1252")
    assert rc == 0 and "train" in out, err


def test_cli_paths(tmp_path, corpus):
    start = time.perf_counter()
    rc, _, err = cli("data", "./no/such/train.txt", cwd=tmp_path)
    assert time.perf_counter() - start < 60  # no hub retries (they took ~25 s)
    one_error_line(rc, err, "no/such/train.txt: no such file or folder")
    rc, _, err = cli("data", str(corpus), "--dev", str(tmp_path / "dev.txt"))
    one_error_line(rc, err, f"{tmp_path / 'dev.txt'}: no such file")
    rc, _, err = cli("data", str(corpus), "--test", str(tmp_path))
    one_error_line(rc, err, f"{tmp_path}: is a folder, expected a text file")
    rc, _, err = cli("data", str(corpus / "x.txt"))
    one_error_line(rc, err, f"({corpus} is a file, not a folder)")
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\n\nPeter B-PER\nSmith I-PER\nsaid Q\n", encoding="utf-8")
    rc, _, err = cli("data", str(bad))
    one_error_line(rc, err, f"error: {bad}:5: tag 'Q' is not valid")


# ----------------------------------------------------------- fault injection: EIO (strace)


@pytest.fixture(scope="module")
def strace() -> str:
    exe = shutil.which("strace")
    if exe is None:
        pytest.skip("strace is not installed: cannot inject read errors")
    probe = subprocess.run(
        [exe, "-f", "-o", "/dev/null", "-e", "trace=read", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {probe.stderr.decode()}")
    return exe


def eio(strace: str, path: Path) -> tuple[str, ...]:
    """strace that makes every read(2) of ``path`` fail with EIO."""
    trace = ("-f", "-o", "/dev/null", "-P", str(path), "-e", "trace=read")
    return (strace, *trace, "-e", "inject=read:error=EIO")


def test_eio_reading_a_corpus_file(strace, corpus):
    rc, _, err = cli("data", str(corpus), prefix=eio(strace, corpus))
    assert one_error_line(rc, err) == f"error: {corpus}: cannot read: Input/output error"


def test_eio_reading_a_dev_file(strace, corpus, tmp_path):
    dev = tmp_path / "dev.txt"
    shutil.copy(corpus, dev)
    rc, _, err = cli("data", str(corpus), "--dev", str(dev), prefix=eio(strace, dev))
    assert one_error_line(rc, err) == f"error: {dev}: cannot read: Input/output error"


def test_eio_reading_the_bundled_corpus(strace, bundled_dir):
    train = bundled_dir / "train.txt"
    rc, _, err = cli("data", prefix=eio(strace, train))
    assert one_error_line(rc, err) == f"error: {train}: cannot read: Input/output error"


def test_eio_reading_predict_input(strace, trained_model, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("John Smith visited Paris .\n" * 3, encoding="utf-8")
    rc, _, err = cli("predict", str(text), "-m", str(trained_model), prefix=eio(strace, text))
    assert one_error_line(rc, err) == f"error: {text}: cannot read: Input/output error"
    # Standard input redirected from the file: the same reads on fd 0.
    with open(text, "rb") as stdin:
        rc, _, err = cli(
            "predict", "-", "-m", str(trained_model), stdin=stdin, prefix=eio(strace, text)
        )
    assert one_error_line(rc, err) == "error: <stdin>: cannot read: Input/output error"


def test_eio_reading_embeddings(strace, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("paris 1 2\nberlin 3 4\n", encoding="utf-8")
    rc, _, err = cli(
        "train",
        "--output",
        str(tmp_path / "model"),
        "--embeddings",
        str(vectors),
        "--max-epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
        prefix=eio(strace, vectors),
    )
    assert one_error_line(rc, err) == f"error: {vectors}: cannot read: Input/output error"


def test_predict_stdin_encodings_at_the_command_line(trained_model):
    rc, _, err = cli(
        "predict",
        "-",
        "-m",
        str(trained_model),
        stdin=None,
    )
    assert rc == 0, err  # empty input is fine
    raw = codecs.BOM_UTF16_LE + "Paris\n".encode("utf-16-le")
    done = subprocess.run(
        [sys.executable, "-m", "tagger", "predict", "-", "-m", str(trained_model)],
        input=raw,
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    one_error_line(done.returncode, done.stderr.decode(), "error: <stdin>: starts with a UTF-16 LE")


# ------------------------------------------------------- permission denied (as nobody)


@pytest.fixture(scope="module")
def as_nobody() -> tuple[str, ...]:
    """A command prefix that runs as ``nobody``, where that can read the interpreter."""
    exe = shutil.which("setpriv")
    if exe is None:
        pytest.skip("setpriv is not installed: cannot drop privileges")
    if os.geteuid() != 0:
        pytest.skip("not root: cannot switch to nobody (and own files are readable anyway)")
    prefix = (exe, "--reuid=65534", "--regid=65534", "--clear-groups")
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import tagger.data"], capture_output=True, cwd=REPO
    )
    if probe.returncode != 0:
        pytest.skip(
            "nobody cannot run this interpreter or import tagger (is the venv or checkout "
            f"unreadable for others?): {probe.stderr.decode().strip()[-300:]}"
        )
    return prefix


@pytest.fixture
def open_tmp():
    """A temporary folder that ``nobody`` can enter (pytest's tmp_path is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="tagger-perm-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        path.chmod(0o700)
    shutil.rmtree(folder)


def test_permission_denied_file(as_nobody, open_tmp):
    locked = open_tmp / "train.txt"
    locked.write_text("EU B-ORG\n", encoding="utf-8")
    locked.chmod(0)
    rc, _, err = cli("data", str(locked), prefix=as_nobody)
    assert one_error_line(rc, err) == f"error: {locked}: cannot read: Permission denied"


def test_permission_denied_folder(as_nobody, open_tmp):
    folder = open_tmp / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("EU B-ORG\n", encoding="utf-8")
    folder.chmod(0)
    rc, _, err = cli("data", str(folder), prefix=as_nobody)
    assert one_error_line(rc, err) == f"error: {folder}: cannot read: Permission denied"
    rc, _, err = cli("data", str(folder / "train.txt"), prefix=as_nobody)
    assert one_error_line(rc, err) == (
        f"error: {folder / 'train.txt'}: cannot read: Permission denied"
    )


def test_permission_denied_embeddings_and_predict_input(as_nobody, open_tmp):
    locked = open_tmp / "locked.txt"
    locked.write_text("paris 1 2\n", encoding="utf-8")
    locked.chmod(0)
    driver = (
        "import sys\n"
        "from tagger.errors import TaggerError\n"
        "from tagger.embeddings import read_vectors\n"
        "from tagger.predict import read_lines\n"
        "for read in (lambda: read_vectors(sys.argv[1], set()),\n"
        "             lambda: list(read_lines(sys.argv[1]))):\n"
        "    try:\n"
        "        read()\n"
        "    except TaggerError as err:\n"
        "        print(f'error: {err}')\n"
    )
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", driver, str(locked)],
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    assert (
        done.stdout.decode().splitlines()
        == [f"error: {locked}: cannot read: Permission denied"] * 2
    )
