"""Writing output when things go wrong: every fault is one ``error:`` line and a non-zero
exit, never a traceback, and nothing the user had is changed.

Each case runs ``python -m tagger`` as a real process (exit status, what reaches the
terminal, signals). Permission cases need file modes to apply: a root run drops the
capabilities that bypass them (``setpriv``), or the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, default_sigint, make_sentences
from typer.testing import CliRunner

from tagger.cli import app
from tagger.io import remove_stale_temporaries, write_atomic

TEXT = "".join(" ".join(tokens) + "\n" for tokens, _ in make_sentences(20, seed=7))
BIG = "John Smith visited Paris on Monday .\n" * 3000  # JSON lines: about 400 kB
FULL = "error: cannot write standard output: No space left on device"


def tagger(*args, cwd, prefix=(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw):
    """``python -m tagger ARGS`` in ``cwd``; text output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if prefix:  # another user: matplotlib and friends want a home they can write in
        env["HOME"] = str(cwd)
    command = [*prefix, sys.executable, "-m", "tagger", *map(str, args)]
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=stdout,
        stdin=stdin,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        **kw,
    )


def one_error(proc, *fragments, status=1) -> str:
    """Exit ``status``; stderr is exactly one ``error: ...`` line holding ``fragments``."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def work(tmp_path) -> Path:
    """A working folder holding ``a.txt`` (raw text to tag)."""
    (tmp_path / "a.txt").write_text(TEXT)
    return tmp_path


# ----------------------------------------------------------------- an input is never its output


@pytest.mark.parametrize(
    "spelling", ["a.txt", "./a.txt", "absolute", "sub/../a.txt", "symlink", "hardlink"]
)
@pytest.mark.parametrize("flag", ["--output", "--html"])
def test_predict_refuses_to_write_its_input(trained_model, work, spelling, flag):
    (work / "sub").mkdir()
    target = {"absolute": str(work / "a.txt"), "symlink": "link.txt", "hardlink": "hard.txt"}
    os.symlink("a.txt", work / "link.txt")
    os.link(work / "a.txt", work / "hard.txt")
    output = target.get(spelling, spelling)
    proc = tagger("predict", "a.txt", "-m", trained_model, flag, output, cwd=work)
    line = one_error(proc, f"{flag} {Path(output)} is the input a.txt")
    assert line.endswith("writing it would destroy it; choose another " + flag)
    assert (work / "a.txt").read_text() == TEXT
    assert listing(work) == ["a.txt", "hard.txt", "link.txt", "sub"]


def test_predict_refuses_to_write_the_model(trained_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    before = (model / "model.safetensors").read_bytes()
    (tmp_path / "a.txt").write_text(TEXT)
    proc = tagger("predict", "a.txt", "-m", "model", "-o", "model/model.safetensors", cwd=tmp_path)
    one_error(proc, "is the input model/model.safetensors")
    assert (model / "model.safetensors").read_bytes() == before


def test_predict_refuses_stdout_appended_to_its_input(trained_model, work):
    with open(work / "a.txt", "a") as out:
        proc = tagger("predict", "a.txt", "-m", trained_model, cwd=work, stdout=out)
    one_error(proc, "standard output is the input a.txt")
    assert (work / "a.txt").read_text() == TEXT


def test_plot_refuses_to_write_the_metrics(trained_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    before = (model / "metrics.json").read_bytes()
    proc = tagger("plot", "model", "-o", "model/metrics.json", cwd=tmp_path)
    one_error(proc, "--output model/metrics.json is the input model/metrics.json")
    assert (model / "metrics.json").read_bytes() == before


# ----------------------------------------------------------------- outputs checked first


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("no/out.jsonl", "error: cannot write no/out.jsonl: the folder no does not exist"),
        ("a.txt/out.jsonl", "error: cannot write a.txt/out.jsonl: a.txt is a file, not a folder"),
        ("sub", "error: cannot write sub: it is a folder; give --output a file name"),
    ],
)
def test_bad_output_is_reported_before_the_model_is_loaded(work, output, message):
    """The model does not exist: the error names the output, so it was checked first."""
    (work / "sub").mkdir()
    proc = tagger("predict", "a.txt", "-m", "no-model", "-o", output, cwd=work)
    assert one_error(proc) == message
    proc = tagger("predict", "a.txt", "-m", "no-model", "--html", output, cwd=work)
    assert one_error(proc) == message.replace("--output", "--html")
    assert listing(work) == ["a.txt", "sub"] and (work / "a.txt").read_text() == TEXT


def test_bulk_output_dir_that_is_a_file(trained_model, work):
    (work / "texts").mkdir()
    (work / "texts" / "b.txt").write_text(TEXT)
    proc = tagger("predict", "texts", "-m", trained_model, "--output-dir", "a.txt", cwd=work)
    assert one_error(proc) == "error: --output-dir a.txt is a file, not a folder; choose another"
    assert (work / "a.txt").read_text() == TEXT


@pytest.mark.parametrize(
    ("output_dir", "where"), [("texts", "is"), ("./texts/", "is"), ("texts/out", "is inside")]
)
def test_bulk_output_dir_in_the_input_folder(trained_model, work, output_dir, where):
    (work / "texts").mkdir()
    (work / "texts" / "b.txt").write_text(TEXT)
    proc = tagger("predict", "texts", "-m", trained_model, "--output-dir", output_dir, cwd=work)
    one_error(proc, f" {where} the input folder texts", "choose a folder outside it")
    assert listing(work / "texts") == ["b.txt"]


def test_init_config_bad_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "old.toml").write_text("# mine\n")
    proc = tagger("init-config", "sub", cwd=tmp_path)
    assert one_error(proc) == "error: sub is a folder; give the name of the TOML file to write"
    proc = tagger("init-config", "no/tagger.toml", cwd=tmp_path)
    assert one_error(proc) == "error: cannot write no/tagger.toml: the folder no does not exist"
    proc = tagger("init-config", "old.toml", cwd=tmp_path)
    assert one_error(proc) == "error: old.toml already exists; pass --force to replace it"
    assert (tmp_path / "old.toml").read_text() == "# mine\n"
    proc = tagger("init-config", "old.toml", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "old.toml").read_text().startswith("#")
    assert listing(tmp_path) == ["old.toml", "sub"]  # no temporary left


# ----------------------------------------------------------------- a full disk, a closed pipe


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "a.txt", "-m", "MODEL"],
        ["predict", "a.txt", "-m", "MODEL", "-f", "conll"],
        ["data", "CORPUS", "--json"],
        ["data", "CORPUS"],
        ["evaluate", "MODEL", "--json"],
        ["summary", "MODEL"],
        ["compare", "MODEL"],
        ["init-config", "--help"],
    ],
    ids=" ".join,
)
def test_standard_output_on_a_full_disk(trained_model, tiny_corpus, work, command):
    names = {"MODEL": trained_model, "CORPUS": tiny_corpus}
    with open("/dev/full", "w") as full:
        proc = tagger(*(names.get(a, a) for a in command), cwd=work, stdout=full)
    assert one_error(proc) == FULL


def test_output_file_on_a_full_device(trained_model, work):
    proc = tagger("predict", "a.txt", "-m", trained_model, "-o", "/dev/full", cwd=work)
    assert one_error(proc) == "error: cannot write /dev/full: No space left on device"
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")  # not replaced


def test_output_into_a_device_is_not_replaced(trained_model, work):
    proc = tagger("predict", "a.txt", "-m", trained_model, "-o", "/dev/null", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.isfile("/dev/null")


@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB tmpfs (root only; skipped where mounting is not allowed)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a small disk needs root to mount a tmpfs")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_output_file_on_a_full_disk_keeps_the_old_file(trained_model, work, small_disk):
    (work / "big.txt").write_text(BIG)
    (small_disk / "out.jsonl").write_text("old output\n")
    proc = tagger(
        "predict",
        "big.txt",
        "-m",
        trained_model,
        "-o",
        small_disk / "out.jsonl",
        "--overwrite",
        cwd=work,
    )
    message = f"error: cannot write {small_disk / 'out.jsonl'}: No space left on device"
    assert one_error(proc) == message
    assert (small_disk / "out.jsonl").read_text() == "old output\n"
    assert listing(small_disk) == ["out.jsonl"]  # the temporary is gone


def test_closed_pipe(trained_model, work):
    """``tagger predict big.txt | head -1``: the reader goes away early."""
    (work / "big.txt").write_text(BIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tagger", "predict", "big.txt", "-m", str(trained_model)]
    proc = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=300)
    assert json.loads(first)["text"] == "John Smith visited Paris on Monday ."
    proc.stderr = stderr
    assert one_error(proc) == "error: cannot write standard output: Broken pipe"


# ----------------------------------------------------------------- permissions


@pytest.fixture(scope="session")
def unprivileged(tmp_path_factory):
    """``(prefix, folder)``: a command prefix under which file modes apply, and a folder
    it can work in. Root ignores file modes, so a root run drops privileges: to uid
    65534 when it can still run this Python and read this repository, otherwise it keeps
    uid 0 but drops the capabilities that bypass file modes."""
    if os.geteuid() != 0:
        yield [], tmp_path_factory.mktemp("perm")
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which ignores file modes, and setpriv is missing")
    shared = Path(tempfile.mkdtemp(prefix="tagger-perm-"))
    shared.chmod(0o777)
    candidates = {
        "uid 65534": ([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"], shared),
        "uid 0 without CAP_DAC_OVERRIDE": (
            [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"],
            tmp_path_factory.mktemp("perm"),
        ),
    }
    why = []
    for name, (prefix, folder) in candidates.items():
        locked = folder / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        probe = f"import tagger.cli, tagger.io, torch\nopen({str(locked / 'x')!r}, 'w')"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", probe],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        locked.chmod(0o755)
        locked.rmdir()
        last = (proc.stderr.strip().splitlines() or ["file modes ignored"])[-1]
        if last.startswith("PermissionError") and last.endswith(f"'{locked / 'x'}'"):
            yield prefix, folder
            shutil.rmtree(shared, ignore_errors=True)
            return
        why.append(f"{name}: {last}")
    shutil.rmtree(shared, ignore_errors=True)
    pytest.skip("cannot drop root's privileges here (" + "; ".join(why) + ")")


@pytest.fixture
def locked(unprivileged, trained_model):
    """``(prefix, work)``: ``work`` holds a.txt, a model copy and ``ro/`` (mode 555)
    with the user's ``ro/out.jsonl`` in it."""
    prefix, base = unprivileged
    work = Path(tempfile.mkdtemp(dir=base))
    work.chmod(0o777)
    (work / "a.txt").write_text(TEXT)
    shutil.copytree(trained_model, work / "model")
    (work / "ro").mkdir()
    (work / "ro" / "out.jsonl").write_text("mine\n")
    (work / "ro").chmod(0o555)
    yield prefix, work
    (work / "ro").chmod(0o755)
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["predict", "a.txt", "-m", "model", "-o", "ro/out.jsonl", "--overwrite"], "ro/out.jsonl"),
        (["predict", "a.txt", "-m", "model", "--html", "ro/page.html"], "ro/page.html"),
        (["init-config", "ro/tagger.toml"], "ro/tagger.toml"),
        (["plot", "model", "-o", "ro/curves.png"], "ro/curves.png"),
    ],
)
def test_folder_without_write_permission(locked, command, message):
    prefix, work = locked
    proc = tagger(*command, cwd=work, prefix=prefix)
    assert one_error(proc) == f"error: cannot write {message}: Permission denied"
    assert listing(work / "ro") == ["out.jsonl"]
    assert (work / "ro" / "out.jsonl").read_text() == "mine\n"


def test_read_only_output_file_is_not_replaced(locked):
    """The folder may be written, but the user made the file itself read-only."""
    prefix, work = locked
    (work / "mine.jsonl").write_text("mine\n")
    (work / "mine.jsonl").chmod(0o444)
    args = ["predict", "a.txt", "-m", "model", "-o", "mine.jsonl", "--overwrite"]
    proc = tagger(*args, cwd=work, prefix=prefix)
    assert one_error(proc) == "error: cannot write mine.jsonl: Permission denied"
    assert (work / "mine.jsonl").read_text() == "mine\n"
    assert not [p for p in work.iterdir() if ".tmp-" in p.name]


def test_bulk_folder_without_write_permission(locked):
    prefix, work = locked
    (work / "texts").mkdir()
    (work / "texts" / "b.txt").write_text(TEXT)
    proc = tagger(
        "predict", "texts", "-m", "model", "--output-dir", "ro/bulk", cwd=work, prefix=prefix
    )
    assert one_error(proc) == "error: cannot write in ro/bulk: Permission denied"
    proc = tagger("predict", "texts", "-m", "model", "--output-dir", "ro", cwd=work, prefix=prefix)
    assert one_error(proc) == (  # the user's file in it is refused before any write
        "error: --output-dir ro holds files a bulk job did not write (out.jsonl); "
        "choose a new or empty folder"
    )
    assert listing(work / "ro") == ["out.jsonl"]


# ----------------------------------------------------------------- temporaries of killed runs


def test_a_killed_writer_leaves_a_temporary_that_the_next_run_removes(trained_model, work):
    out = work / "out.jsonl"
    child = (
        "import sys, time\n"
        "from tagger.io import write_atomic\n"
        "def chunks():\n"
        "    yield 'x' * 100000\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
        f"write_atomic(chunks(), {str(out)!r})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", child], cwd=work, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    left = [p for p in work.iterdir() if p.name.startswith(f".out.jsonl.tmp-{proc.pid}-")]
    assert len(left) == 1 and not out.exists()

    (work / ".out.jsonl.tmp-999999-abc").write_text("dead\n")  # a dead pid: a file...
    (work / ".out.jsonl.tmp-999998-dir").mkdir()  # ... and a folder
    (work / ".out.jsonl.tmp-999998-dir" / "x").write_text("dead\n")
    alive = work / f".out.jsonl.tmp-{os.getpid()}-live"  # a running writer's
    alive.write_text("still being written\n")
    other = work / ".other.jsonl.tmp-999999-abc"  # another output's
    other.write_text("not ours\n")
    result = tagger("predict", "a.txt", "-m", trained_model, "-o", "out.jsonl", cwd=work)
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(TEXT.splitlines())
    assert listing(work) == sorted(["a.txt", "out.jsonl", alive.name, other.name])
    assert alive.read_text() == "still being written\n"


def test_remove_stale_temporaries(tmp_path):
    path = tmp_path / "x.png"
    for name in (".x.png.tmp-999999-a", ".x.png.tmp-0-b", ".x.png.tmp-notapid-c", ".x.png.tmp-7"):
        (tmp_path / name).write_text("")
    (tmp_path / f".x.png.tmp-{os.getpid()}-me").mkdir()
    remove_stale_temporaries(path)
    assert listing(tmp_path) == sorted(
        [".x.png.tmp-notapid-c", ".x.png.tmp-7", f".x.png.tmp-{os.getpid()}-me"]
    )
    remove_stale_temporaries(tmp_path / "missing" / "x.png")  # no folder: nothing to do


def test_write_atomic_names_its_temporary_and_keeps_modes(tmp_path):
    out = tmp_path / "out.txt"
    seen = []

    def chunks():
        seen.extend(p.name for p in tmp_path.iterdir())
        yield "text\n"
        yield b"bytes\n"

    out.write_text("old\n")
    out.chmod(0o600)
    write_atomic(chunks(), out)
    assert out.read_text() == "text\nbytes\n" and out.stat().st_mode & 0o777 == 0o600
    assert len(seen) == 2 and sorted(seen)[0].startswith(f".out.txt.tmp-{os.getpid()}-")
    assert listing(tmp_path) == ["out.txt"]


def test_write_atomic_writes_through_a_symlink(tmp_path):
    (tmp_path / "real.txt").write_text("old\n")
    os.symlink("real.txt", tmp_path / "link.txt")
    write_atomic(["new\n"], tmp_path / "link.txt")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new\n"


# ----------------------------------------------------------------- the safety net


def test_interrupt_exits_130_and_leaves_no_temporary(trained_model, work):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tagger", "predict", "-", "-m", str(trained_model)]
    proc = subprocess.Popen(
        [*command, "-o", "out.jsonl"],
        cwd=work,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 240
    while not any(p.name.startswith(".out.jsonl.tmp-") for p in work.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    # 130, or killed by the re-delivered SIGINT when it lands during interpreter shutdown:
    # the shell reports 130 for both
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert stderr == "interrupted\n" and stdout == ""
    assert listing(work) == ["a.txt"]


ESCAPE = """
import sys
import tagger.io

def fail(path):
    raise {error}

tagger.io.read_metrics = fail
sys.argv = ["tagger", "compare", "some-model"]
from tagger.cli import main
main()
"""


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("OSError(5, 'Input/output error')", "error: Input/output error"),
        (
            "OSError(28, 'No space left on device', 'some-model/x')",
            "error: some-model/x: No space left on device",
        ),
        ("PermissionError(13, 'Permission denied', path)", "error: some-model: Permission denied"),
        ("IsADirectoryError(21, 'Is a directory', b'dir')", "error: dir: Is a directory"),
        ("NotADirectoryError(20, 'Not a directory', 'f/x')", "error: f/x: Not a directory"),
    ],
)
def test_an_os_error_escaping_a_command_is_one_line(tmp_path, error, message):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", ESCAPE.format(error=error)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one_error(proc) == message
    assert proc.stdout == ""


def test_safety_net_in_process(monkeypatch):
    """The same through typer's runner (the wrapper, without ``main``)."""

    def fail(path):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr("tagger.io.read_metrics", fail)
    result = CliRunner().invoke(app, ["compare", "m"])
    assert result.exit_code == 1 and result.stderr == "error: m: Input/output error\n"

    def interrupt(path):
        raise KeyboardInterrupt

    monkeypatch.setattr("tagger.io.read_metrics", interrupt)
    result = CliRunner().invoke(app, ["compare", "m"])
    assert result.exit_code == 130 and result.stderr == "interrupted\n"
    assert sys.stdout.__class__.__name__ != "_StdoutGuard"  # put back after the command
