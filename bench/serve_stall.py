"""Does image decoding stall `folio serve`? /healthz latency while /v1/caption is fed the heaviest bodies allowed.

    .venv/bin/python bench/serve_stall.py [--caption DIR] [--clients 3] [--seconds 20]

Each caption request is the largest body the server takes (1 MiB by default) of MAX_IMAGES PNGs of blank
canvases at the pixel limit (4096×4096: a few kilobytes of file, 16.8M pixels to decode). `--clients` threads
post them back to back while another client asks /healthz every 20 ms; the same probe runs first on the idle
server. Prints p50/p99 /healthz latency both ways (target: p99 <= 100 ms under load), the caption requests'
own latency, the CPU (lscpu), torch's threads and the machine's load average before the run.

The server runs as its own process (`folio serve`). Without --caption, a tiny captioner is trained for a few
steps on synthetic scenes (the weights do not matter: decoding the images is what is measured).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _serving import start_folio_serve


def _tiny_captioner(root: Path) -> Path:
    from folio.tasks.caption import CaptionTrainOptions, DataSpec, train
    from folio.training.config import TrainConfig

    train(CaptionTrainOptions(data=DataSpec(image_size=32, scenes_train=64, scenes_valid=8, scenes_objects=(1, 1)),
                              out=str(root / "shapes"), model={"channels": (8, 8), "hidden": 16, "feature_dim": 8,
                                                                "attention_dim": 8, "embedding_dim": 8},
                              batch_size=32, train=TrainConfig(max_steps=5, warmup_steps=1, eval_every=5, save_every=10_000,
                                                               log_every=5), device="cpu", progress=False))
    return root / "shapes"


def heaviest_body(limit: int) -> tuple[bytes, str]:
    """The JSON body of MAX_IMAGES canvases at the pixel limit, in the most expensive mode that fits `limit`."""
    from PIL import Image

    from folio.data.images import MAX_IMAGE_PIXELS
    from folio.tasks.caption.serve import MAX_IMAGES

    side = int(MAX_IMAGE_PIXELS**0.5)
    for mode in ("RGBA", "RGB", "L", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (side, MAX_IMAGE_PIXELS // side), "white").save(buffer, format="PNG", optimize=True)
        body = json.dumps({"images": [base64.b64encode(buffer.getvalue()).decode()] * MAX_IMAGES}).encode()
        if len(body) <= limit:
            return body, f"{MAX_IMAGES} {mode} PNGs of {side}×{MAX_IMAGE_PIXELS // side} ({len(buffer.getvalue()):,} bytes each)"
    raise SystemExit(f"even {MAX_IMAGES} palette canvases are over the {limit:,}-byte body limit")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def probe_health(base: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    """/healthz latencies (s), one request every 20 ms, over one connection."""
    latencies = []
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=base, timeout=60) as client:
        while time.perf_counter() < deadline and not (stop and stop.is_set()):
            start = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - start)
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - start)))
    return latencies


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caption", default=None, help="a caption model directory (default: a tiny fresh one)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    args = parser.parse_args()
    import torch

    print(f"cpu: {_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    body, what = heaviest_body(args.max_body_bytes)
    print(f"each caption request: {len(body):,} bytes, {what}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.caption) if args.caption else _tiny_captioner(Path(tmp))
        server, base = start_folio_serve("--model", str(model), "--max-body-bytes", str(args.max_body_bytes),
                                         stderr=subprocess.PIPE, text=True)
        try:
            idle = probe_health(base, args.seconds / 2)
            stop, captions, statuses = threading.Event(), [], []

            def load() -> None:
                with httpx.Client(base_url=base, timeout=600) as client:
                    while not stop.is_set():
                        start = time.perf_counter()
                        response = client.post("/v1/caption", content=body, headers={"Content-Type": "application/json"})
                        captions.append(time.perf_counter() - start)
                        statuses.append(response.status_code)

            loaders = [threading.Thread(target=load) for _ in range(args.clients)]
            for loader in loaders:
                loader.start()
            time.sleep(1.0)  # the first bodies are in flight
            loaded = probe_health(base, args.seconds)
            stop.set()
            for loader in loaders:
                loader.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    results = {
        "idle": {"p50_ms": round(1000 * _percentile(idle, 0.5), 1), "p99_ms": round(1000 * _percentile(idle, 0.99), 1),
                 "n": len(idle)},
        "loaded": {"p50_ms": round(1000 * _percentile(loaded, 0.5), 1),
                   "p99_ms": round(1000 * _percentile(loaded, 0.99), 1), "max_ms": round(1000 * max(loaded), 1),
                   "n": len(loaded)},
        "caption": {"clients": args.clients, "requests": len(captions), "statuses": sorted(set(statuses)),
                    "p50_s": round(_percentile(captions, 0.5), 2)},
    }
    print(f"/healthz idle:   p50 {results['idle']['p50_ms']} ms, p99 {results['idle']['p99_ms']} ms ({len(idle)} probes)")
    print(f"/healthz loaded: p50 {results['loaded']['p50_ms']} ms, p99 {results['loaded']['p99_ms']} ms, max "
          f"{results['loaded']['max_ms']} ms ({len(loaded)} probes; target p99 <= 100 ms)")
    print(f"caption: {args.clients} clients, {len(captions)} requests (statuses {results['caption']['statuses']}), "
          f"p50 {results['caption']['p50_s']} s a request")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
