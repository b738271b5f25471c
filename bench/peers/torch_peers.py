#!/usr/bin/env python3
"""Time PyTorch on the shapes bitnet-bench measures, for the side-by-side in bench/RESULTS.md.

Needs only torch and the standard library. On the GPU machine:

    python3 bench/peers/torch_peers.py --out $OUT/peers.json

What is timed (CUDA events, warmup, median of repeats):
  * torch_fp16_linear        fp16 F.linear (cuBLAS), x [M, K] @ W[N, K]^T, every shape and M
  * torch_int8_int_mm        torch._int_mm int8 x int8 -> int32; it needs M > 16 and K, N multiples
                             of 8, so M is padded up to a multiple of 8 above 16 (padded_m says so)
  * torch_weight_quant_eager BitNet absmean weight quantization, eager ops, f32 [N, K] -> int8
  * torch_act_quant_eager    BitNet absmax activation quantization, eager ops, f32 [M, K] -> int8
  * the decode stack: one token through the 210 linear layers of a 30-layer BitNet-2B4T, fp16
    (and int8 _int_mm), launched eagerly and replayed as one CUDA graph: every linear reading the
    layer input (independent), and fp16 also in a real decode's chained data flow.
  * attention (attention_peers.py, the file's "attention" list): F.scaled_dot_product_attention
    fp16 and fp32 on bitnet-bench's decode and prefill cases (grouped-query heads), and the KV
    cache append as an in-place index_copy_ of one position.

Per-shape cases rotate through enough copies of the weights/inputs that the set exceeds the L2
cache (same rule as bitnet-bench), and time a CUDA graph of one call per copy, divided by the copy
count: device time per call without Python launch overhead, comparable to GPU timestamp queries.
If graph capture fails for a case, eager calls between events are timed instead (method says so).
"""

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import attention_peers  # beside this file (python3 puts the script's folder on sys.path)

SHAPES = [  # (label, N, K): weight [N, K], as in bench/src/workload.rs
    ("2B q/o", 2560, 2560),
    ("2B k/v", 640, 2560),
    ("2B gate/up", 6912, 2560),
    ("2B down", 2560, 6912),
    ("8B gate/up", 14336, 4096),
    ("8B down", 4096, 14336),
]
TOKENS = [1, 8, 64, 512]
LAYER_2B4T = [(2560, 2560), (640, 2560), (640, 2560), (2560, 2560), (6912, 2560), (6912, 2560), (2560, 6912)]
COLD_BYTES = 256 << 20  # default --cold-mib: rotate copies until the set exceeds this (H100 L2: 50 MB)
MAX_COPIES = 512


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--repeats", type=int, default=30, help="timed repeats per case (median)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per case")
    p.add_argument("--quick", action="store_true",
                   help="2B shapes, M in {1, 8}, 3 repeats, a 4-layer stack, 2B4T attention decode "
                        "over 512 positions and a 128-token prefill (as bitnet-bench --quick)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test only)")
    p.add_argument("--layers", type=int, default=None,
                   help="layers of the decode stack (default 30; quick 4)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds; cases that would start later are recorded as skipped (stacks run first)")
    p.add_argument("--attention-only", action="store_true",
                   help="only the attention and KV-append cases (as bitnet-bench --filter attention)")
    p.add_argument("--cold-mib", type=int, default=COLD_BYTES >> 20,
                   help="rotate input copies until the working set exceeds this (0: one copy)")
    return p.parse_args()


class Timer:
    """Median device time of a callable: CUDA events (or perf_counter on the CPU)."""

    def __init__(self, device, warmup, repeats):
        self.cuda = device.type == "cuda"
        self.warmup, self.repeats = warmup, repeats

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def samples(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        out = []
        for _ in range(self.repeats):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t) * 1e3)
        return out

    def graph(self, fn):
        """Captures fn once into a CUDA graph; returns its replay, or None when not on CUDA."""
        if not self.cuda:
            return None
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):  # warm cuBLAS handles and workspaces outside the capture
                fn()
        torch.cuda.current_stream().wait_stream(s)
        self.sync()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        self.sync()
        return g.replay


def summary(samples, per_call=1):
    v = [x / per_call for x in samples]
    return {"ms": statistics.median(v), "min_ms": min(v), "samples": len(v)}


def copies_for(nbytes):
    return max(1, min(MAX_COPIES, math.ceil(COLD_BYTES / max(1, nbytes))))


def set_cold_bytes(mib):
    global COLD_BYTES
    COLD_BYTES = mib << 20


def time_rotating(timer, make_call, copies):
    """Time make_call(i) over i in 0..copies, as one CUDA graph per rep when possible."""
    def all_calls():
        for i in range(copies):
            make_call(i)
    try:
        replay = timer.graph(all_calls)
        if replay is not None:
            return dict(summary(timer.samples(replay), copies), method="cuda_graph_per_call")
    except Exception as e:  # capture unsupported for this op: fall back to eager, and say so
        note = f"graph capture failed ({type(e).__name__}: {e}); eager timing"
        torch.cuda.synchronize()
        r = summary(timer.samples(all_calls), copies)
        return dict(r, method="eager_events_per_call", note=note)
    return dict(summary(timer.samples(all_calls), copies), method="eager_per_call")


def weight_quant(w):
    """BitNet b1.58 absmean quantization: s = mean|w|, wq = clamp(round(w / s), -1, 1)."""
    s = w.abs().mean().clamp_(min=1e-5)
    return (w / s).round_().clamp_(-1, 1).to(torch.int8), s


def act_quant(x):
    """BitNet absmax per-token quantization: xq = clamp(round(x * 127 / max|x|), -128, 127)."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-5)
    return (x * scale).round_().clamp_(-128, 127).to(torch.int8), scale


def int_mm_rows(m):
    """_int_mm needs M > 16 (and multiples of 8 for the int8 tensor-core path)."""
    return max(24, (m + 7) // 8 * 8)


DEADLINE = None  # time.monotonic() after which cases are skipped (--time-limit)


def out_of_time():
    return DEADLINE is not None and time.monotonic() > DEADLINE


def run_case(results, timer, dev, imp, label, m, n, k, body):
    row = {"impl": imp, "shape": label, "m": m, "n": n, "k": k}
    if out_of_time():
        row["error"] = "skipped: --time-limit reached"
        results.append(row)
        return
    try:
        row.update(body())
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"
        if timer.cuda:
            torch.cuda.synchronize()
    results.append(row)
    ms = row.get("ms")
    print(f"  {imp:26s} {label:11s} M={m:<4d} {n}x{k}: "
          + (f"{ms * 1e3:10.1f} us" if ms is not None else row.get("error", "?")), file=sys.stderr)


def shape_cases(args, timer, dev, tokens, shapes):
    cases = []
    seen_k = set()  # activation quant depends on [M, K] only: once per distinct K, as bitnet-bench
    for label, n, k in shapes:
        wbytes = n * k * 2
        nc = copies_for(wbytes)
        w16 = [torch.randn(n, k, device=dev, dtype=torch.float16) for _ in range(nc)]
        for m in tokens:
            x = torch.randn(m, k, device=dev, dtype=torch.float16)
            run_case(cases, timer, dev, "torch_fp16_linear", label, m, n, k,
                     lambda: time_rotating(timer, lambda i: F.linear(x, w16[i]), nc))
        del w16
        w8 = [torch.randint(-1, 2, (n, k), device=dev, dtype=torch.int8) for _ in range(copies_for(n * k))]
        for m in tokens:
            mp = int_mm_rows(m)
            x8 = torch.randint(-128, 128, (mp, k), device=dev, dtype=torch.int8)
            run_case(cases, timer, dev, "torch_int8_int_mm", label, m, n, k,
                     lambda: dict(time_rotating(timer, lambda i: torch._int_mm(x8, w8[i].t()), len(w8)),
                                  padded_m=mp))
        del w8
        wf = [torch.randn(n, k, device=dev, dtype=torch.float32) for _ in range(copies_for(n * k * 4))]
        run_case(cases, timer, dev, "torch_weight_quant_eager", label, 0, n, k,
                 lambda: time_rotating(timer, lambda i: weight_quant(wf[i]), len(wf)))
        del wf
        for m in tokens if k not in seen_k else []:
            xs = [torch.randn(m, k, device=dev, dtype=torch.float32) for _ in range(copies_for(m * k * 4))]
            run_case(cases, timer, dev, "torch_act_quant_eager", label, m, 0, k,
                     lambda: time_rotating(timer, lambda i: act_quant(xs[i]), len(xs)))
        seen_k.add(k)
        if timer.cuda:
            torch.cuda.empty_cache()
    return cases


def stack_cases(args, timer, dev):
    """The headline: one decode token through all linear layers, fp16 and int8, eager and graph."""
    out = []
    mats = [nk for _ in range(args.layers) for nk in LAYER_2B4T]

    def record(imp, graph, body, padded=None, wbytes=None, chained=False):
        row = {"impl": imp, "cuda_graph": graph, "chained": chained, "layers": args.layers, "m": 1,
               "weight_bytes": wbytes}
        if padded:
            row["padded_m"] = padded
        try:
            row.update(body())
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
        out.append(row)
        print(f"  stack {imp:22s} graph={graph!s:5s} chained={chained!s:5s}: "
              + (f"{row['ms']:.3f} ms" if "ms" in row else row.get("error", "?")), file=sys.stderr)

    # Scaled by 1/sqrt(K) so the chained stack keeps its activations in fp16 range.
    ws = [torch.randn(n, k, device=dev, dtype=torch.float16) * k ** -0.5 for n, k in mats]
    xs = {k: torch.randn(1, k, device=dev, dtype=torch.float16) for _, k in LAYER_2B4T}
    wbytes = sum(w.numel() * 2 for w in ws)

    def fp16_step():
        for w in ws:
            F.linear(xs[w.shape[1]], w)
    record("torch_fp16_linear", False, lambda: summary(timer.samples(fp16_step)), wbytes=wbytes)
    if timer.cuda:
        record("torch_fp16_linear", True, lambda: summary(timer.samples(timer.graph(fp16_step))),
               wbytes=wbytes)

    def fp16_chained_step():
        # A real decode's data flow (bench/src/workload.rs LAYER_2B4T_READS): q, k, v read the
        # layer input; o reads q; gate and up read o; down reads gate and feeds the next layer.
        x = xs[2560]
        for i in range(0, len(ws), 7):
            q, _k, _v = (F.linear(x, ws[i + j]) for j in range(3))
            o = F.linear(q, ws[i + 3])
            g, _u = F.linear(o, ws[i + 4]), F.linear(o, ws[i + 5])
            x = F.linear(g, ws[i + 6])
    record("torch_fp16_linear", False, lambda: summary(timer.samples(fp16_chained_step)),
           wbytes=wbytes, chained=True)
    if timer.cuda:
        record("torch_fp16_linear", True,
               lambda: summary(timer.samples(timer.graph(fp16_chained_step))),
               wbytes=wbytes, chained=True)
    del ws
    if timer.cuda:
        torch.cuda.empty_cache()

    mp = int_mm_rows(1)
    w8 = [torch.randint(-1, 2, (n, k), device=dev, dtype=torch.int8) for n, k in mats]
    x8 = {k: torch.randint(-128, 128, (mp, k), device=dev, dtype=torch.int8) for _, k in LAYER_2B4T}
    wbytes8 = sum(w.numel() for w in w8)

    def int8_step():
        for w in w8:
            torch._int_mm(x8[w.shape[1]], w.t())
    record("torch_int8_int_mm", False, lambda: summary(timer.samples(int8_step)), mp, wbytes8)
    if timer.cuda:
        record("torch_int8_int_mm", True, lambda: summary(timer.samples(timer.graph(int8_step))),
               mp, wbytes8)
    del w8
    return out


def driver_version():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""
    except Exception:
        return ""


def main():
    args = parse_args()
    started = time.time()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_peers: CUDA is not available (use --device cpu for a smoke test)")
    tokens, shapes = TOKENS, SHAPES
    if args.quick:
        tokens, shapes, args.repeats, args.warmup, args.cold_mib = [1, 8], SHAPES[:4], 3, 1, 0
    if args.layers is None:
        # bitnet-bench's defaults, so that a quick run's stacks pair up in the merge.
        args.layers = 4 if args.quick else 30
    set_cold_bytes(args.cold_mib)
    torch.manual_seed(0)
    timer = Timer(dev, args.warmup, args.repeats)
    notes = [f"per-shape cases rotate copies so the working set exceeds {COLD_BYTES >> 20} MiB "
             f"(max {MAX_COPIES} copies); time per call = one CUDA-graph replay of one call per copy "
             "divided by the copies (eager timing on the CPU or where capture failed: see method)",
             "torch._int_mm needs M > 16 and multiples of 8: M padded (see padded_m)",
             f"warmup {args.warmup}, repeats {args.repeats}, median"]
    print(f"torch_peers: torch {torch.__version__} on {args.device}", file=sys.stderr)
    global DEADLINE
    if args.time_limit is not None:
        DEADLINE = time.monotonic() + args.time_limit
    # The headline first, so a time limit never cuts it.
    stacks = [] if args.attention_only else stack_cases(args, timer, dev)
    if timer.cuda:
        torch.cuda.empty_cache()
    # Attention next (seconds), as bitnet-bench runs it before the long tail of per-shape cases.
    attention, attention_notes = attention_peers.attention_cases(
        timer, dev, args.quick, time_rotating, copies_for, out_of_time)
    notes.extend(attention_notes)
    cases = [] if args.attention_only else shape_cases(args, timer, dev, tokens, shapes)
    report = {
        "schema": "bitnet-bench-peers/1",
        "command": " ".join(["python3"] + sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "driver": driver_version() if dev.type == "cuda" else "",
        "host_threads": os.cpu_count() or 0,
        "cases": cases,
        "stacks": stacks,
        "attention": attention,
        "notes": notes,
        "seconds": round(time.time() - started, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"torch_peers: wrote {args.out} in {report['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
