"""Threads: the faster of one thread and all of them for one stream's steps (`folio.runtime.on_faster_threads`),
and OpenMP workers let go (`folio.nn.kernels.release_workers`): libgomp keeps a pool of workers for every thread
that ran a parallel region, and once they outnumber the CPUs none of them spin-waits between regions any more
(a batched SmolLM2 step took 42 ms instead of 28 on 2 CPUs). A thread done with parallel work lets its pool go:
the thread that hands a generation to a batcher, a batcher with nothing to do, a server's worker thread after
each job. Counted as the process's threads, in a fresh interpreter (no other test's threads come and go)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from folio.nn import kernels
from folio.runtime import on_faster_threads, threads


@pytest.mark.parametrize("faster", [1, 2])
def test_one_streams_steps_run_on_the_faster_thread_count_and_hand_over_the_callers(faster):
    """Steps whose cost depends on the thread count they run on (the slower one waits 50 ms, the faster 1 ms):
    after one untimed item and three timed steps on each count, alternating, all the rest run on the faster;
    the caller's own setting is back at every item."""
    ran = []

    def steps():
        for _ in range(12):
            count = torch.get_num_threads()
            ran.append(count)
            threading.Event().wait(0.001 if count == faster else 0.05)
            yield count

    with threads(3):  # the caller's setting: neither of the two counts timed
        handed = []
        for _ in on_faster_threads(steps(), 2):
            handed.append(torch.get_num_threads())
    assert handed == [3] * 12
    assert ran[:7] == [3, 1, 2, 1, 2, 1, 2]
    assert ran[7:] == [faster] * 5
    assert list(on_faster_threads(iter([]), 2)) == []

SCRIPT = """
import json, os, sys, threading, torch
from folio.decoding.batching import ContinuousBatcher, Sequence
from folio.nn import kernels
from folio.serve.app import WorkerThreads
from folio.tasks.lm import LanguageModel

def threads_now():
    return len(os.listdir("/proc/self/task"))

def parallel_work():  # one parallel region of two threads
    torch.ones(1 << 22).mul_(2)

torch.set_num_threads(2)
lm = LanguageModel.from_pretrained(sys.argv[1], dtype="int4")
kernels.release_workers()
counts = {"start": threads_now()}
parallel_work()
counts["main thread's pool"] = threads_now()
kernels.release_workers()
counts["let go"] = threads_now()

parallel_work()
batcher, done, seen = ContinuousBatcher(lm.model), threading.Event(), []
def on_token(token):
    seen.append(threads_now())  # in the batcher's thread, after a step of its kernels on two threads
    return False
batcher.submit(Sequence(torch.tensor([1, 2, 3]), 4, on_token, lambda reason, error: done.set(), top_k=1))
done.wait(60)
counts["while generating"] = max(seen)
for _ in range(6000):  # the batcher lets its pool go once it has nothing to do: wait for that, not for a time
    if threads_now() == counts["start"] + 1:
        break
    threading.Event().wait(0.01)
counts["batcher idle"] = threads_now()

with WorkerThreads(1) as pool:
    pool.submit(parallel_work).result()
    counts["after a worker's job"] = threads_now()
print(json.dumps(counts))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or kernels._pause_openmp() is None or not kernels.available()[0],
                    reason="needs Linux's /proc, torch's own libgomp and Folio's kernels")
def test_threads_done_with_parallel_work_let_their_openmp_workers_go(tmp_path):
    pytest.importorskip("gguf")
    from tests.helpers.llama import tiny_llama, write_gguf

    path = write_gguf(tmp_path / "tiny.gguf", tiny_llama(ff_hidden=64))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    start = counts["start"]
    assert counts["main thread's pool"] == start + 1  # the region's second thread stays, waiting for the next
    assert counts["let go"] == start
    assert counts["while generating"] >= start + 2  # the batcher's thread, and its own worker
    assert counts["batcher idle"] == start + 1  # the batcher's thread alone: the submitter's and its pools gone
    assert counts["after a worker's job"] == start + 2  # the batcher's thread and the server's worker thread
