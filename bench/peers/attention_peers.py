"""PyTorch's side of bitnet-bench's attention section (bench/src/attention.rs); used by torch_peers.py.

The same cases as ours, causal with scale 1/sqrt(D) (SDPA's default):
  * decode, Tq = 1: the query is the newest of the Tk positions, so it attends every key and
    needs no mask; head layouts 2B4T (Hq 20, Hkv 5, D 128) and 8B (Hq 32, Hkv 8, D 128) at
    Tk in {64, 512, 4096};
  * prefill, Tq = Tk = 512, 2B4T: is_causal=True (torch aligns the mask top-left; with Tq = Tk
    that is ours);
  * --quick: 2B4T only, decode over 512 positions and a 128-token prefill (as bitnet-bench).

torch_sdpa_fp16 / torch_sdpa_fp32: F.scaled_dot_product_attention on [1, H, T, D] tensors
(ours are token-major [T, H, D]: converted outside the timed region), grouped-query heads by
enable_gqa=True where this torch has it (2.5 and later), else K/V expanded to the query heads
with repeat_interleave outside the timed region (the row's "gqa" says which; also where the
enable_gqa call failed, with the reason in "note"). A CUDA graph of
one call per rotated (q, k, v) copy, replayed and divided by the copies (torch_peers.time_rotating).

torch_kv_append_fp16 / torch_kv_append_fp32: one position's k and v ([1, Hkv, 1, D]) written in
place with index_copy_ into preallocated [1, Hkv, Tk + 1, D] caches holding Tk positions, at
position Tk (a static cache's update); a graph of APPEND_GROUP appends divided by their count.
"""

import sys

import torch
import torch.nn.functional as F

LAYOUTS = {"2B4T": (20, 5, 128), "8B": (32, 8, 128)}  # model: (Hq, Hkv, D)
DECODE_TK = [64, 512, 4096]
PREFILL, QUICK_PREFILL = 512, 128
APPEND_GROUP = 16  # appends per graph replay: bitnet-bench's fewest calls per timed sample
# torch's SDPBackend values (ATen/SDPBackend.h), for what torch._fused_sdp_choice returns.
BACKENDS = {0: "math", 1: "flash_attention", 2: "efficient_attention", 3: "cudnn_attention",
            4: "overrideable"}


def specs(quick):
    """(model, Tq, Tk) of every case, in bitnet-bench's order."""
    if quick:
        layouts, tks, prefill = ["2B4T"], DECODE_TK[1:2], QUICK_PREFILL
    else:
        layouts, tks, prefill = ["2B4T", "8B"], DECODE_TK, PREFILL
    cases = [(model, 1, tk) for model in layouts for tk in tks]
    cases.append(("2B4T", prefill, prefill))
    return cases


def gqa_supported(dev):
    """Whether this torch's SDPA takes enable_gqa (2.5 and later): an unknown keyword is a TypeError."""
    q = torch.zeros(1, 2, 1, 8, device=dev)
    kv = torch.zeros(1, 1, 4, 8, device=dev)
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except TypeError:
        return False
    except Exception:  # known keyword, other trouble: the timed cases record their own errors
        pass
    return True


def to_sdpa(x):
    """Token-major [T, H, D] (as ours) -> [1, H, T, D], contiguous: SDPA's layout."""
    return x.permute(1, 0, 2).unsqueeze(0).contiguous()


def chosen_backend(q, k, v, kwargs):
    """The SDPA backend torch picks for these inputs, by its private chooser; None where unknown."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return None
    try:
        return BACKENDS.get(int(choose(q, k, v, **kwargs)))
    except Exception:
        return None


def sdpa_case(timer, dev, dtype, model, tq, tk, gqa, rotate, copies_for):
    """Times SDPA on one case in `dtype`: rotated (q, k, v) copies whose total exceeds the cold bytes."""
    hq, hkv, d = LAYOUTS[model]
    kv_heads = hkv if gqa else hq

    def one_set():
        q = to_sdpa(torch.randn(tq, hq, d, device=dev, dtype=dtype))
        k = to_sdpa(torch.randn(tk, hkv, d, device=dev, dtype=dtype))
        v = to_sdpa(torch.randn(tk, hkv, d, device=dev, dtype=dtype))
        if not gqa:  # HF's repeat_kv: query head h reads kv head h // (Hq / Hkv), as ours
            k = k.repeat_interleave(hq // hkv, dim=1)
            v = v.repeat_interleave(hq // hkv, dim=1)
        return q, k, v

    elem = torch.finfo(dtype).bits // 8
    copies = copies_for(elem * (tq * hq * d + 2 * tk * kv_heads * d))
    sets = [one_set() for _ in range(copies)]
    kwargs = {"is_causal": tq > 1}  # decode: the one query attends every key, no mask
    if gqa:
        kwargs["enable_gqa"] = True

    def call(i):
        q, k, v = sets[i]
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    row = dict(rotate(timer, call, copies), copies=copies)
    backend = chosen_backend(*sets[0], kwargs)
    if backend is not None:
        row["backend"] = backend
    return row


def sdpa_any_gqa(timer, dev, dtype, model, tq, tk, gqa, rotate, copies_for):
    """sdpa_case with enable_gqa where this torch has it; should that call fail (a backend that
    refuses grouped heads for this shape), the case again with K/V expanded, and the row says so."""
    args = (timer, dev, dtype, model, tq, tk)
    if not gqa:
        return dict(sdpa_case(*args, False, rotate, copies_for), gqa="repeat_interleave")
    try:
        return dict(sdpa_case(*args, True, rotate, copies_for), gqa="enable_gqa")
    except Exception as e:
        why = f"enable_gqa failed ({type(e).__name__}: {e}); K/V expanded instead"
    if timer.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    row = dict(sdpa_case(*args, False, rotate, copies_for), gqa="repeat_interleave")
    row["note"] = "; ".join(filter(None, [why, row.get("note")]))
    return row


def append_case(timer, dev, dtype, model, tk, rotate):
    """Times one position's k and v written in place into caches holding `tk` positions."""
    _, hkv, d = LAYOUTS[model]
    caches = []
    for _ in range(2):
        c = torch.zeros(1, hkv, tk + 1, d, device=dev, dtype=dtype)
        c[:, :, :tk] = torch.randn(1, hkv, tk, d, device=dev).to(dtype)  # the positions held
        caches.append(c)
    cache_k, cache_v = caches
    k_new = to_sdpa(torch.randn(1, hkv, d, device=dev, dtype=dtype))  # [1, Hkv, 1, D]
    v_new = to_sdpa(torch.randn(1, hkv, d, device=dev, dtype=dtype))
    pos = torch.tensor([tk], device=dev)

    def call(_i):
        cache_k.index_copy_(2, pos, k_new)
        cache_v.index_copy_(2, pos, v_new)

    return dict(rotate(timer, call, APPEND_GROUP), copies=APPEND_GROUP)


def attention_cases(timer, dev, quick, rotate, copies_for, out_of_time):
    """Every attention and append case: (rows for the JSON's "attention" list, notes).

    rotate(timer, make_call, copies) and copies_for(nbytes) are torch_peers' time_rotating and
    copies_for; out_of_time() says whether --time-limit has passed (later cases are skipped).
    """
    gqa = gqa_supported(dev)
    rows = []

    def record(imp, model, tq, tk, body, *body_args, **extra):
        hq, hkv, d = LAYOUTS[model]
        row = {"impl": imp, "model": model, "tq": tq, "tk": tk, "hq": hq, "hkv": hkv, "d": d,
               "causal": True, **extra}
        if out_of_time():
            row["error"] = "skipped: --time-limit reached"
        else:
            try:
                row.update(body(*body_args))
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
            if timer.cuda:
                try:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception as e:  # a sticky CUDA error: every later case records it too
                    row.setdefault("error", f"{type(e).__name__}: {e}")
        rows.append(row)
        ms = row.get("ms")
        print(f"  {imp:22s} {model:5s} Tq={tq:<4d} Tk={tk:<5d}: "
              + (f"{ms * 1e3:10.2f} us" if ms is not None else row.get("error", "?")), file=sys.stderr)

    how = "enable_gqa" if gqa else "repeat_interleave"
    for model, tq, tk in specs(quick):
        for dtype, imp in ((torch.float16, "torch_sdpa_fp16"), (torch.float32, "torch_sdpa_fp32")):
            record(imp, model, tq, tk, sdpa_any_gqa, timer, dev, dtype, model, tq, tk, gqa, rotate,
                   copies_for, gqa=how)
        if tq == 1:
            for dtype, imp in ((torch.float16, "torch_kv_append_fp16"),
                               (torch.float32, "torch_kv_append_fp32")):
                record(imp, model, 1, tk, append_case, timer, dev, dtype, model, tk, rotate)
    notes = [
        "attention: F.scaled_dot_product_attention on [1, H, T, D] (converted from ours' [T, H, D] "
        "outside the timed region), grouped-query heads by "
        + ("enable_gqa=True" if gqa else
           "repeat_interleave of K/V outside the timed region (this torch's SDPA has no enable_gqa)")
        + "; decode without a mask, prefill is_causal=True; default scale 1/sqrt(D)",
        f"attention: torch.get_float32_matmul_precision() = {torch.get_float32_matmul_precision()!r} "
        "('highest': no TF32 in fp32 matmuls)",
        f"KV append: index_copy_ of one position into [1, Hkv, Tk + 1, D] caches, a graph of "
        f"{APPEND_GROUP} appends divided by {APPEND_GROUP}",
    ]
    return rows, notes
