"""Corpora larger than memory: peak memory and time to the first training step of `folio lm train`,
cold (tokenizing the corpus into the token cache) and warm (mapping the cache), at growing corpus sizes.

Each corpus is the embedded plays repeated to SIZE megabytes (10**6 bytes) in one UTF-8 file. For each
size the bench runs, as a real subprocess,

    folio lm train --corpus FILE --layers 1 --hidden 32 --max-steps 1 --log-every 1 ...

twice: cold, with an empty cache (`FOLIO_CACHE`), then warm. It watches the run's progress on stderr and,
the moment the first step's line appears, reads the process's peak resident memory (`VmHWM`: everything
it touched, the mapped corpus included) and its proportional share (`Pss`, shared pages split between
the processes that map them), then stops it. The run's banner gives the tokenizing throughput.

`--torchrun` repeats the warm run under `torchrun --nproc_per_node=2` at the smallest and the largest
size and reads both ranks the same way: the second process must not add a copy of the corpus, only its
own interpreter, torch and model (`added` below: the ranks' Pss summed, minus one process's).

Linux only (/proc). The last line is JSON.

    .venv/bin/python bench/lm_scale.py [--sizes 10,100,1000] [--dir /tmp/folio-scale] [--torchrun]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

MB = 10**6
FIRST_STEP = re.compile(r"\bstep 1/")
BANNER = re.compile(r"training tokens \((tokenized in ([\d.]+) s, ([\d.]+) MB/s|from the token cache)\)")
TRAIN = ["lm", "train", "--layers", "1", "--hidden", "32", "--max-steps", "1", "--log-every", "1",
         "--device", "cpu", "--sample-temperatures", "--max-time", "1e9"]


def make_corpus(directory: Path, size_mb: int) -> Path:
    """The embedded plays repeated to `size_mb` megabytes, cut at a line (made once, then reused)."""
    path = directory / f"plays-{size_mb}MB.txt"
    if path.exists() and abs(path.stat().st_size - size_mb * MB) < MB:
        return path
    from folio.data.corpora import load_corpus

    plays = load_corpus("shakespeare").encode("utf-8")
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as handle:
        written = 0
        while written + len(plays) <= size_mb * MB:
            handle.write(plays)
            written += len(plays)
        rest = plays[: size_mb * MB - written]
        handle.write(rest[: rest.rfind(b"\n") + 1])
    tmp.replace(path)
    return path


def memory(pid: int) -> dict:
    """Peak resident and current proportional memory of a process, in MB (10**6 bytes)."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
    return {"peak_rss_mb": round(peak / MB, 1), "pss_mb": round(pss / MB, 1)}


def ranks(pid: int) -> list[int]:
    """The Python processes under `pid` that run Folio (torchrun's workers)."""
    found = []
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for cpid in map(int, child.read_text().split()):
            cmdline = Path(f"/proc/{cpid}/cmdline").read_bytes()
            found += [cpid] if b"folio" in cmdline and b"torch.distributed.run" not in cmdline else ranks(cpid)
    return sorted(set(found))


def first_step(command: list[str], env: dict, processes: int, timeout: float) -> dict:
    """Run `command` until its first training step is logged; then measure and stop it."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    seen, lines = threading.Event(), []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if FIRST_STEP.search(line):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen.wait(timeout):
            raise SystemExit(f"no first step within {timeout:.0f} s:\n{''.join(lines[-20:])}")
        seconds = time.perf_counter() - started
        pids = ranks(proc.pid) if processes > 1 else [proc.pid]
        if len(pids) != processes:
            raise SystemExit(f"found {len(pids)} training processes, expected {processes}")
        per_process = [memory(pid) for pid in pids]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
    banner = next((m for line in lines if (m := BANNER.search(line))), None)
    result = {"seconds_to_first_step": round(seconds, 2), "processes": per_process,
              "peak_rss_mb": max(p["peak_rss_mb"] for p in per_process),
              "pss_mb": round(sum(p["pss_mb"] for p in per_process), 1)}
    if banner is not None and banner.group(2):
        result.update(tokenize_seconds=float(banner.group(2)), tokenize_mb_per_s=float(banner.group(3)))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB (10**6 bytes), comma-separated")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/folio-scale"), help="where the corpora and caches go")
    parser.add_argument("--torchrun", action="store_true", help="also measure two processes under torchrun")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take to its first step")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    folio = [sys.executable, "-m", "folio.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    for size in sizes:
        corpus = make_corpus(args.dir, size)
        with open(corpus, encoding="utf-8") as handle:
            chars = sum(len(block) for block in iter(lambda: handle.read(1 << 22), ""))
        cache = args.dir / f"cache-{size}MB"
        shutil.rmtree(cache, ignore_errors=True)
        run_env = {**env, "FOLIO_CACHE": str(cache)}
        command = [*folio, *TRAIN, "--corpus", str(corpus), "--out", str(args.dir / "run")]
        row = {"size_mb": size, "chars": chars, "budget_mb": round((600 * MB + 2 * chars) / MB, 1)}
        for phase in ("cold", "warm"):
            row[phase] = first_step(command, run_env, 1, args.timeout)
            print(f"{size:>5} MB {phase}: first step after {row[phase]['seconds_to_first_step']:.1f} s, "
                  f"peak RSS {row[phase]['peak_rss_mb']:.0f} MB (budget {row['budget_mb']:.0f}), "
                  f"Pss {row[phase]['pss_mb']:.0f} MB"
                  + (f", tokenized at {row[phase]['tokenize_mb_per_s']:.1f} MB/s" if "tokenize_mb_per_s" in row[phase] else ""),
                  flush=True)
        if args.torchrun and size in (sizes[0], sizes[-1]):
            distributed = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "folio.cli", *command[len(folio):]]
            row["torchrun"] = first_step(distributed, {**run_env, "OMP_NUM_THREADS": "1"}, 2, args.timeout)
            row["torchrun"]["added_pss_mb"] = round(row["torchrun"]["pss_mb"] - row["warm"]["pss_mb"], 1)
            print(f"{size:>5} MB torchrun x2: Pss {row['torchrun']['pss_mb']:.0f} MB in all, "
                  f"{row['torchrun']['added_pss_mb']:.0f} MB more than one process; peak RSS per rank "
                  + ", ".join(f"{p['peak_rss_mb']:.0f}" for p in row["torchrun"]["processes"]) + " MB", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
        rows.append(row)
    print(json.dumps({"bench": "lm_scale", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
