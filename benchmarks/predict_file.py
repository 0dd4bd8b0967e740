"""Time ``tagger predict`` on a large raw-text file; check offsets; report peak memory.

    python benchmarks/predict_file.py --model models/conll --mb 1
    python benchmarks/predict_file.py --model models/conll --mb 100 --format conll

The text is written from CoNLL sentences (detokenized, one sentence per line, the
sentences repeated until the size is reached) into ``--workdir``. The command runs as a
subprocess under ``/usr/bin/time -v`` when available (peak RSS), otherwise psutil-free
``resource.getrusage`` of the child is used.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from tagger.data import read_source

_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|'s|n't|'re|'ve|'ll|'d|'m)(?=\s|$)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


def write_text(source: str | None, path: Path, megabytes: float) -> int:
    """Write about ``megabytes`` MB of text; returns the number of lines."""
    corpus = read_source(source)
    lines = [detokenize(s.tokens) for split in corpus.splits.values() for s in split]
    target = int(megabytes * 1_000_000)
    written = n = 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            line = lines[n % len(lines)] + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


def check_offsets(text_file: Path, jsonl_file: Path) -> tuple[int, int]:
    """Every entity's text equals the input line's slice, with no outer whitespace."""
    entities = lines = 0
    with text_file.open(encoding="utf-8") as src, jsonl_file.open(encoding="utf-8") as out:
        for line, record in zip(src, out):
            record = json.loads(record)
            line = line.rstrip("\n")
            assert record["text"] == line, f"line {lines + 1}: text differs"
            for ent in record["entities"]:
                piece = line[ent["start"] : ent["end"]]
                assert piece == ent["text"] and piece.strip() == piece and piece, (lines + 1, ent)
                entities += 1
            lines += 1
    return lines, entities


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="../shared/data/conll2003", help="sentences to write")
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "conll"])
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    text = args.workdir / f"text-{args.mb:g}mb.txt"
    if not text.exists():
        write_text(args.data, text, args.mb)
    out = args.workdir / f"text-{args.mb:g}mb.{args.format}"
    words = sum(len(line.split()) for line in text.open(encoding="utf-8"))
    cmd = [sys.executable, "-m", "tagger", "predict", str(text), "--model", args.model]
    cmd += ["--format", args.format, "--output", str(out)]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    proc = subprocess.run(timer + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"predict failed ({proc.returncode}):\n{proc.stderr}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = int(match.group(1)) if match else children.ru_maxrss
    print(f"input: {text} ({text.stat().st_size / 1e6:.1f} MB, {words:,} whitespace words)")
    print(f"wall: {wall:.1f} s  ({words / wall:,.0f} words/s, start-up and tokenization included)")
    print(f"peak RSS: {peak_kb / 1024:.0f} MiB")
    if args.format == "jsonl":
        lines, entities = check_offsets(text, out)
        print(f"offsets: {entities:,} entities on {lines:,} lines, all equal text[start:end]")


if __name__ == "__main__":
    main()
