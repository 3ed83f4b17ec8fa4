#!/usr/bin/env python3
"""Train a tiny BitNet b1.58 language model on the project's own text (CPU, minutes) and export
it for the Rust importer (harness/src/fixtures/trained.rs), which writes it as GGUF.

What it trains
    The llama.cpp "bitnet" / "bitnet-b1.58" block, exactly as the Rust engine computes it:
    pre-norm attention (GQA, NEOX RoPE, causal softmax, scale 1/sqrt(head_dim)) with a sub-norm
    before the output projection, pre-norm gated FFN with a sub-norm before the down
    projection, tied embeddings (logits = result_norm(h) @ token_embd^T), RMSNorm without mean
    or bias, no biases anywhere. `--act relu2` is bitnet-b1.58 (relu(gate)^2 * up), `--act silu`
    is bitnet (silu(gate) * up). Defaults: n_embd 256, 4 layers, 4 query heads, 2 KV heads
    (head_dim 64), n_ff 768, vocabulary 384, context 256 (trained on 128-token windows), RoPE
    base 10000, rms_eps 1e-5.

QAT scheme (BitNet b1.58)
    Every projection is a BitLinear. Weights: s = mean(|W|) over the tensor,
    Wq = clamp(round(W / (s + 1e-8)), -1, 1) * s. Activations, per token (row):
    scale = 127 / max(max|x|, 1e-5), xq = clamp(round(x * scale), -128, 127) / scale.
    y = xq @ Wq^T. While training both quantizers use the straight-through estimator
    (W + (Wq - W).detach()); master weights stay fp32. Embedding and norm weights are not
    quantized. AdamW (weight decay on the 2-D tensors only), linear warmup + cosine decay.

Text
    The byte-level BPE vocabulary of the project's fixtures (`--vocab`, the GGUF tokenizer keys
    as JSON: 256 byte tokens, 125 merges, 3 control tokens; BOS = 381), GPT-2 style encoding
    after LLaMA-3's pre-tokenizer regex, with llama.cpp's `ignore_merges` (a piece that is a
    token as a whole is that token, as the GGUF's "llama-bpe" pre-tokenizer implies). Corpus:
    all *.md, *.rs, *.py, *.sh, *.toml files of the repository (`--root`), without target/,
    fuzz/target/, .git, and anything under a directory named `fixtures` except *.md files there
    and harness/src/fixtures/corpus.txt (which is included). By default the files are read from
    a git revision (`--corpus-rev`, default HEAD: tracked files only, so a run is reproducible
    while the work tree changes); `--corpus-rev worktree` walks the work tree instead. Files are
    sorted by path; every 20th (index % 20 == 10) is held out. Each document starts with BOS;
    training windows are random 128-token slices of the training stream whose first input token
    is replaced by BOS.

Export (in `--out`)
    config.json   hyper-parameters, final losses, timing, corpus size (see below).
    weights.bin   little-endian tensors, each starting at a multiple of 32 bytes.
    weights.json  {"tensors": [{"name", "dtype": "f32"|"i8", "shape": [ne0, ne1] (GGUF order,
                  ne0 = input width, fastest), "offset", "scale": absmean s or null}]}.
                  token_embd.weight f32 [n_embd, n_vocab]; output_norm.weight and the per-layer
                  norms f32; the 7 projections per layer i8 ternary codes (-1/0/+1) of the
                  PyTorch [out, in] weight in C order (shape [in, out]) with their f32 scale.
    train_log.csv step, train loss, lr, elapsed seconds (and held-out loss where evaluated).
    train.log     command line, corpus, hyper-parameters, timing, losses, export check, samples.
    loss_curve.svg train and held-out loss against step.
    corpus_files.txt  the exact file list (path, bytes, sha256, split).
    The export is checked before the script ends: the model is rebuilt from weights.bin
    (Wq = codes * scale) and its logits on a held-out batch are compared with the training
    model's quantized forward.

How to run
    pip install -r scripts/train-requirements.txt
    python3 scripts/train-tiny-bitnet.py --selftest
    python3 scripts/train-tiny-bitnet.py --act relu2 --out /work/trained-out/relu2
    python3 scripts/train-tiny-bitnet.py --act silu  --out /work/trained-out/silu

Time budget
    The defaults (600 steps of 16 x 128 tokens) take about 7 minutes per run on 2 idle CPU cores;
    `--max-seconds` (default 720) stops training early if the machine is slower (the log and
    config.json then say so and record the steps actually taken). Everything is seeded
    (`--seed`); with the same torch build and thread count a run is repeatable.
"""

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time

# OpenMP threads that sleep instead of spinning while they wait: with other processes on the
# same 2 cores (cargo builds), spinning threads made a training step 2-3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import regex  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

BOS = 381
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SOURCE_EXT = (".md", ".rs", ".py", ".sh", ".toml")
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


# ----------------------------------------------------------------------------------------------
# Tokenizer: GPT-2 byte-level BPE over LLaMA-3 pre-tokenized pieces.


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        self.tokens = d["tokenizer.ggml.tokens"]
        self.types = d.get("tokenizer.ggml.token_type")
        self.ranks = {tuple(m.split(" ")): i for i, m in enumerate(d["tokenizer.ggml.merges"])}
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.bos = d.get("tokenizer.ggml.bos_token_id", BOS)
        self.b2u = bytes_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}
        self.split = regex.compile(LLAMA3_SPLIT)
        self.cache = {}
        for b in range(256):
            assert self.tokens[b] == self.b2u[b], f"token {b} is not byte {b}"

    def __len__(self):
        return len(self.tokens)

    def bpe(self, piece):
        hit = self.cache.get(piece)
        if hit is not None:
            return hit
        syms = [self.b2u[b] for b in piece.encode("utf-8")]
        whole = "".join(syms)
        if whole in self.ids:  # llama.cpp's ignore_merges (the llama-bpe pre-tokenizer)
            syms = [whole]
        while len(syms) > 1:
            best, rank = None, None
            for pair in zip(syms, syms[1:]):
                r = self.ranks.get(pair)
                if r is not None and (rank is None or r < rank):
                    best, rank = pair, r
            if best is None:
                break
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        ids = [self.ids[s] for s in syms]
        self.cache[piece] = ids
        return ids

    def encode(self, text, bos=True):
        ids = [self.bos] if bos else []
        for piece in self.split.findall(text):
            ids.extend(self.bpe(piece))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            if self.types is not None and self.types[i] == 3:  # control token
                out += t.encode("utf-8")
            else:
                out += bytes(self.u2b[c] for c in t)
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# Corpus.


def wanted(rel):
    parts = rel.split("/")
    if parts[0] == ".git" or parts[0] == "target" or rel.startswith("fuzz/target/"):
        return False
    if ".git" in parts[:-1]:
        return False
    if rel == "harness/src/fixtures/corpus.txt":
        return True
    if not rel.endswith(SOURCE_EXT):
        return False
    if "fixtures" in parts[:-1]:
        return rel.endswith(".md")
    return True


def load_corpus(root, rev):
    """[(relative path, bytes)] sorted by path, and a description of the source."""
    files = []
    if rev == "worktree":
        for dirpath, dirnames, filenames in os.walk(root):
            reld = os.path.relpath(dirpath, root)
            reld = "" if reld == "." else reld.replace(os.sep, "/") + "/"
            dirnames[:] = sorted(d for d in dirnames
                                 if d != ".git" and (reld + d) not in ("target", "fuzz/target"))
            for fn in filenames:
                rel = reld + fn
                if wanted(rel) and os.path.isfile(os.path.join(dirpath, fn)):
                    with open(os.path.join(dirpath, fn), "rb") as f:
                        files.append((rel, f.read()))
        source = f"work tree of {root}"
    else:
        git = ["git", "-C", root]
        commit = subprocess.check_output(git + ["rev-parse", rev + "^{commit}"], text=True).strip()
        names = subprocess.check_output(git + ["ls-tree", "-r", "-z", "--name-only", commit])
        for rel in names.decode("utf-8").split("\0"):
            if rel and wanted(rel):
                data = subprocess.check_output(git + ["show", f"{commit}:{rel}"])
                files.append((rel, data))
        source = f"git {root} at {commit}"
    files.sort(key=lambda f: f[0])
    return files, source


def build_streams(tok, files, heldout_every=20, heldout_index=10):
    train, held, listing = [], [], []
    for i, (rel, data) in enumerate(files):
        text = data.decode("utf-8", errors="replace")
        ids = tok.encode(text, bos=True)
        split = "heldout" if i % heldout_every == heldout_index else "train"
        (held if split == "heldout" else train).extend(ids)
        listing.append((rel, len(data), hashlib.sha256(data).hexdigest(), split, len(ids)))
    return np.array(train, dtype=np.int64), np.array(held, dtype=np.int64), listing


# ----------------------------------------------------------------------------------------------
# Model.


def rmsnorm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w over the last dimension (torch's fused kernel)."""
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def weight_quant(w):
    """(ternary codes, absmean scale) of a weight tensor."""
    s = w.abs().mean()
    return torch.clamp(torch.round(w / (s + 1e-8)), -1, 1), s


class _WeightQuant(torch.autograd.Function):
    """codes * s forward, identity backward: the same values and gradients as the
    straight-through W + (codes * s - W).detach(), without the extra passes."""

    @staticmethod
    def forward(ctx, w):
        codes, s = weight_quant(w)
        return codes * s

    @staticmethod
    def backward(ctx, g):
        return g


class _ActQuant(torch.autograd.Function):
    """Per-row absmax int8 fake quantization forward, identity backward (STE)."""

    @staticmethod
    def forward(ctx, x):
        scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        return torch.clamp(torch.round(x * scale), -128, 127) / scale

    @staticmethod
    def backward(ctx, g):
        return g


def act_quant(x):
    return _ActQuant.apply(x)


class TinyBitNet(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E, F_, V = cfg["n_embd"], cfg["n_ff"], cfg["n_vocab"]
        hd = E // cfg["n_head"]
        kv = cfg["n_head_kv"] * hd
        self.token_embd = torch.nn.Parameter(torch.randn(V, E) * 0.02)
        self.output_norm = torch.nn.Parameter(torch.ones(E))
        self.layers = torch.nn.ModuleList()
        out_std = 1.0 / math.sqrt(2 * cfg["n_layer"])
        for _ in range(cfg["n_layer"]):
            L = torch.nn.ParameterDict()
            for name, n in (("attn_norm", E), ("attn_sub_norm", E), ("ffn_norm", E),
                            ("ffn_sub_norm", F_)):
                L[name] = torch.nn.Parameter(torch.ones(n))
            for name, (o, i), gain in (("attn_q", (E, E), 1.0), ("attn_k", (kv, E), 1.0),
                                       ("attn_v", (kv, E), 1.0), ("attn_output", (E, E), out_std),
                                       ("ffn_gate", (F_, E), 1.0), ("ffn_up", (F_, E), 1.0),
                                       ("ffn_down", (E, F_), out_std)):
                L[name] = torch.nn.Parameter(torch.randn(o, i) * (gain / math.sqrt(i)))
            self.layers.append(L)
        hd2 = hd // 2
        inv = cfg["rope_freq_base"] ** (-2.0 * torch.arange(hd2, dtype=torch.float64) / hd)
        ang = torch.arange(cfg["context_length"], dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("rope_cos", torch.cos(ang).float(), persistent=False)
        self.register_buffer("rope_sin", torch.sin(ang).float(), persistent=False)

    def quantized_weights(self):
        """Per layer {name: Wq = codes * s} (straight-through gradients to W)."""
        return [{name: _WeightQuant.apply(L[name]) for name in PROJECTIONS} for L in self.layers]

    def forward(self, x, wq=None):
        if wq is None:
            wq = self.quantized_weights()
        return forward(self.cfg, x, self.token_embd, self.output_norm, self.layers, wq,
                       self.rope_cos, self.rope_sin)


def rope_neox(x, cos, sin):
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)


def forward(cfg, x, emb, out_norm, norms, wq, rope_cos, rope_sin):
    """Logits [B, T, V] for tokens x [B, T]; `norms[l][name]` are the norm weights and
    `wq[l][name]` the (quantized) projection weights [out, in]."""
    B, T = x.shape
    E, nh, nkv, eps = cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"], cfg["rms_eps"]
    hd = E // nh
    cos, sin = rope_cos[:T], rope_sin[:T]
    h = emb[x]
    for L, W in zip(norms, wq):
        a = act_quant(rmsnorm(h, L["attn_norm"], eps))
        q = (a @ W["attn_q"].t()).view(B, T, nh, hd).transpose(1, 2)
        k = (a @ W["attn_k"].t()).view(B, T, nkv, hd).transpose(1, 2)
        v = (a @ W["attn_v"].t()).view(B, T, nkv, hd).transpose(1, 2)
        q, k = rope_neox(q, cos, sin), rope_neox(k, cos, sin)
        g = nh // nkv
        k = k.repeat_interleave(g, dim=1)  # query head i uses kv head i // g
        v = v.repeat_interleave(g, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(hd))
        att = att.transpose(1, 2).reshape(B, T, E)
        o = act_quant(rmsnorm(att, L["attn_sub_norm"], eps)) @ W["attn_output"].t()
        h = h + o
        f = act_quant(rmsnorm(h, L["ffn_norm"], eps))
        up, gate = f @ W["ffn_up"].t(), f @ W["ffn_gate"].t()
        if cfg["act"] == "relu2":
            act = torch.relu(gate).square() * up
        else:
            act = F.silu(gate) * up
        act = act_quant(rmsnorm(act, L["ffn_sub_norm"], eps))
        h = h + act @ W["ffn_down"].t()
    return rmsnorm(h, out_norm, eps) @ emb.t()


# ----------------------------------------------------------------------------------------------
# Export.


def export(model, out):
    cfg = model.cfg
    entries, blob = [], bytearray()

    def add(name, arr, dtype, shape, scale=None):
        pad = (-len(blob)) % 32
        blob.extend(b"\0" * pad)
        entries.append({"name": name, "dtype": dtype, "shape": shape, "offset": len(blob),
                        "scale": scale})
        arr = np.ascontiguousarray(arr, dtype="<f4" if dtype == "f32" else "i1")
        blob.extend(arr.tobytes(order="C"))

    with torch.no_grad():
        E, V = cfg["n_embd"], cfg["n_vocab"]
        add("token_embd.weight", model.token_embd.numpy(), "f32", [E, V])
        add("output_norm.weight", model.output_norm.numpy(), "f32", [E])
        for l, L in enumerate(model.layers):
            for name in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"):
                add(f"blk.{l}.{name}.weight", L[name].numpy(), "f32", [L[name].shape[0]])
            for name in PROJECTIONS:
                codes, s = weight_quant(L[name])
                o, i = codes.shape
                add(f"blk.{l}.{name}.weight", codes.to(torch.int8).numpy(), "i8", [i, o],
                    float(np.float32(s.item())))
    with open(os.path.join(out, "weights.bin"), "wb") as f:
        f.write(bytes(blob))
    with open(os.path.join(out, "weights.json"), "w") as f:
        json.dump({"tensors": entries}, f, indent=1)
    return entries


def load_export(out, cfg):
    """Rebuild (embedding, output norm, norms, Wq) from weights.bin/weights.json alone."""
    with open(os.path.join(out, "weights.json")) as f:
        entries = {e["name"]: e for e in json.load(f)["tensors"]}
    with open(os.path.join(out, "weights.bin"), "rb") as f:
        data = f.read()

    def get(name):
        e = entries[name]
        assert e["offset"] % 32 == 0, name
        n = int(np.prod(e["shape"]))
        dt = np.dtype("<f4") if e["dtype"] == "f32" else np.dtype("i1")
        a = np.frombuffer(data, dtype=dt, count=n, offset=e["offset"])
        a = torch.from_numpy(a.astype(np.float32)).reshape(list(reversed(e["shape"])))
        if e["dtype"] == "i8":
            assert set(torch.unique(a).tolist()) <= {-1.0, 0.0, 1.0}, name
            a = a * torch.tensor(e["scale"], dtype=torch.float32)
        return a

    emb, onorm = get("token_embd.weight"), get("output_norm.weight")
    norms, wq = [], []
    for l in range(cfg["n_layer"]):
        norms.append({n: get(f"blk.{l}.{n}.weight")
                      for n in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")})
        wq.append({n: get(f"blk.{l}.{n}.weight") for n in PROJECTIONS})
    return emb, onorm, norms, wq


def loss_svg(path, train_pts, held_pts, title):
    W, H, ml, mr, mt, mb = 640, 360, 56, 16, 28, 40
    pts = train_pts + held_pts
    xmax = max(p[0] for p in pts) or 1
    ys = [p[1] for p in pts]
    ylo, yhi = math.floor(min(ys) * 2) / 2, math.ceil(max(ys) * 2) / 2
    if yhi <= ylo:
        yhi = ylo + 1

    def sx(x):
        return ml + (W - ml - mr) * x / xmax

    def sy(y):
        return mt + (H - mt - mb) * (1 - (y - ylo) / (yhi - ylo))

    def line(p, color):
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{d}"/>'

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>',
         f'<rect x="{ml}" y="{mt}" width="{W - ml - mr}" height="{H - mt - mb}" fill="none" '
         f'stroke="#888"/>']
    nt = int(round((yhi - ylo) / 0.5))
    step_y = 0.5 if nt <= 12 else 1.0
    y = ylo
    while y <= yhi + 1e-9:
        s.append(f'<line x1="{ml}" x2="{W - mr}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                 f'stroke="#eee"/><text x="{ml - 4}" y="{sy(y) + 4:.1f}" '
                 f'text-anchor="end">{y:.1f}</text>')
        y += step_y
    for i in range(6):
        x = xmax * i / 5
        s.append(f'<text x="{sx(x):.1f}" y="{H - mb + 14}" text-anchor="middle">{int(x)}</text>')
    s.append(f'<text x="{(W + ml) / 2}" y="{H - 6}" text-anchor="middle">step</text>')
    s.append(f'<text x="14" y="{(H - mb + mt) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(H - mb + mt) / 2})">loss (nats/token)</text>')
    s.append(line(train_pts, "#1f77b4"))
    if held_pts:
        s.append(line(held_pts, "#d62728"))
    s.append(f'<text x="{W - mr - 8}" y="{mt + 16}" text-anchor="end" fill="#1f77b4">train</text>')
    s.append(f'<text x="{W - mr - 8}" y="{mt + 30}" text-anchor="end" fill="#d62728">'
             f'held-out</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


# ----------------------------------------------------------------------------------------------
# Self-test.


def selftest(args):
    tok = Tokenizer(args.vocab)
    assert len(tok) == 384 and tok.bos == BOS
    samples = ["The quick brown fox jumps over the lazy dog.", "fn main() {\n    println!(\"hi\");\n}\n",
               "# Thresholds\n\nIt's 12345 tokens -- they'll see ünïcödé ≈ 3.14 🚀\r\n\t x",
               "", "   leading and trailing   ", "don't STOP'LL 'S"]
    for s in samples:
        ids = tok.encode(s)
        assert ids[0] == BOS
        assert tok.decode(ids[1:]) == s, (s, ids)
    ids = tok.encode(" the the", bos=False)
    assert ids == [tok.ids["Ġthe"], tok.ids["Ġthe"]], ids
    print(f"tokenizer: {len(samples)} round trips ok; ' the the' -> {ids}")
    files, source = load_corpus(args.root, args.corpus_rev)
    nbytes = ntok = 0
    for rel, data in files:
        text = data.decode("utf-8", errors="replace")
        ids = tok.encode(text)
        assert tok.decode(ids[1:]) == text, rel
        nbytes, ntok = nbytes + len(data), ntok + len(ids)
    print(f"corpus ({source}): {len(files)} files, {nbytes} bytes, {ntok} tokens, all round trip")
    # Quantizers.
    w = torch.randn(8, 16)
    codes, s = weight_quant(w)
    assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0} and abs(s - w.abs().mean()) < 1e-7
    x = torch.randn(3, 16)
    xq = act_quant(x)
    assert torch.allclose(xq.abs().amax(-1), x.abs().amax(-1), rtol=1e-6)
    assert (xq - x).abs().max() <= (x.abs().amax(-1) / 127).max() / 2 + 1e-6
    # The autograd functions give the straight-through estimator's values and gradients.
    w1, x1 = w.clone().requires_grad_(), x.clone().requires_grad_()
    w2, x2 = w.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = act_quant(x1) @ _WeightQuant.apply(w1).t()
    c2, s2 = weight_quant(w2.detach())
    scale = 127.0 / x2.detach().abs().amax(-1, keepdim=True).clamp(min=1e-5)
    xq2 = torch.clamp(torch.round(x2.detach() * scale), -128, 127) / scale
    y2 = (x2 + (xq2 - x2).detach()) @ (w2 + (c2 * s2 - w2).detach()).t()
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert (y1 - y2).abs().max() < 1e-5
    assert (w1.grad - w2.grad).abs().max() < 1e-5 and (x1.grad - x2.grad).abs().max() < 1e-5
    v = torch.randn(4, 32) * 3
    ref = v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * torch.arange(32.0)
    assert (rmsnorm(v, torch.arange(32.0), 1e-5) - ref).abs().max() < 1e-4
    print("quantizers, straight-through gradients and rmsnorm ok")
    # Model: causal, GQA shapes, export round trip.
    torch.manual_seed(0)
    cfg = model_config(args)
    cfg["n_layer"] = 2
    m = TinyBitNet(cfg).eval()
    t = torch.randint(0, 384, (2, 20))
    with torch.no_grad():
        a = m(t)
        b = m(torch.cat((t[:, :10], torch.randint(0, 384, (2, 10))), dim=1))
    assert a.shape == (2, 20, 384) and (a[:, :10] - b[:, :10]).abs().max() < 1e-5, "not causal"
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        export(m, d)
        emb, on, norms, wq = load_export(d, cfg)
        with torch.no_grad():
            c = forward(cfg, t, emb, on, norms, wq, m.rope_cos, m.rope_sin)
        diff = (a - c).abs().max().item()
        assert diff < 1e-4, diff
    print(f"model: causal ok, export round trip max |dlogit| {diff:.3g}")
    print("selftest ok")


# ----------------------------------------------------------------------------------------------
# Training.


def model_config(args):
    return {"act": args.act, "n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head,
            "n_head_kv": args.n_head_kv, "n_ff": args.n_ff, "n_vocab": 384,
            "context_length": args.context, "rope_freq_base": float(args.rope_base),
            "rms_eps": args.rms_eps}


def lr_at(step, args):
    warm = max(1, int(args.steps * args.warmup))
    if step < warm:
        return args.lr * (step + 1) / warm
    p = (step - warm) / max(1, args.steps - warm)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def windows(stream, starts, T):
    x = np.stack([stream[s:s + T] for s in starts])
    y = np.stack([stream[s + 1:s + T + 1] for s in starts])
    x[:, 0] = BOS
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def evaluate(model, batches):
    model.eval()
    tot = n = 0
    wq = model.quantized_weights()
    for x, y in batches:
        logits = model(x, wq)
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="sum").item()
        n += y.numel()
    model.train()
    return tot / n


@torch.no_grad()
def greedy(model, tok, prompt, n):
    model.eval()
    ids = tok.encode(prompt)
    wq = model.quantized_weights()
    for _ in range(n):
        ctx = ids[-model.cfg["context_length"]:]
        logits = model(torch.tensor([ctx]), wq)
        ids.append(int(logits[0, -1].argmax()))
    model.train()
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--act", choices=("relu2", "silu"), default="relu2")
    ap.add_argument("--out", default=None, help="output directory (required unless --selftest)")
    ap.add_argument("--root", default=os.path.dirname(here), help="repository whose text is the corpus")
    ap.add_argument("--corpus-rev", default="HEAD",
                    help="git revision to read the corpus from, or 'worktree'")
    ap.add_argument("--vocab", default="/work/trained-out/vocab.json",
                    help="the GGUF tokenizer keys of the fixtures' vocabulary, as JSON")
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--n-ff", type=int, default=768)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--rms-eps", type=float, default=1e-5)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1, help="final lr as a fraction of --lr")
    ap.add_argument("--warmup", type=float, default=0.05, help="warmup as a fraction of --steps")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-seqs", type=int, default=128, help="held-out windows per evaluation")
    ap.add_argument("--max-seconds", type=float, default=720.0,
                    help="stop training after this many seconds (safety net)")
    ap.add_argument("--sample-tokens", type=int, default=60)
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.selftest:
        selftest(args)
        return
    if not args.out:
        ap.error("--out is required")
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train.log"), "w")

    def log(msg=""):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    t_start = time.time()
    log("command: " + " ".join([sys.executable] + sys.argv))
    log(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; torch {torch.__version__}, numpy "
        f"{np.__version__}, threads {torch.get_num_threads()}")
    tok = Tokenizer(args.vocab)
    files, source = load_corpus(args.root, args.corpus_rev)
    train, held, listing = build_streams(tok, files)
    nbytes = sum(len(d) for _, d in files)
    ntok = len(train) + len(held)
    with open(os.path.join(args.out, "corpus_files.txt"), "w") as f:
        f.write(f"# {source}\n# path\tbytes\tsha256\tsplit\ttokens\n")
        for row in listing:
            f.write("\t".join(str(c) for c in row) + "\n")
    log(f"corpus: {source}")
    log(f"  {len(files)} files, {nbytes} bytes, {ntok} tokens ({nbytes / ntok:.2f} bytes/token); "
        f"train {len(train)} tokens, held-out {len(held)} tokens "
        f"({100 * len(held) / ntok:.1f}%, {sum(r[3] == 'heldout' for r in listing)} files)")
    by_ext = {}
    for rel, n, _, _, _ in listing:
        ext = os.path.splitext(rel)[1] or rel
        c = by_ext.setdefault(ext, [0, 0])
        c[0] += 1
        c[1] += n
    log("  by kind: " + ", ".join(f"{k} {v[0]} files {v[1]} bytes" for k, v in sorted(by_ext.items())))
    log("  held-out files: " + ", ".join(r[0] for r in listing if r[3] == "heldout"))
    log("  full list: corpus_files.txt")
    log(f"  prepared in {time.time() - t_start:.1f} s")

    cfg = model_config(args)
    T = args.seq_len
    assert T <= cfg["context_length"]
    model = TinyBitNet(cfg)
    nparam = sum(p.numel() for p in model.parameters())
    log("hyper-parameters: " + json.dumps(cfg))
    log(f"  params {nparam}; seq_len {T}, batch {args.batch}, steps {args.steps}, lr {args.lr} "
        f"(warmup {args.warmup:.0%}, cosine to {args.min_lr_frac:.0%}), AdamW betas (0.9, 0.95) "
        f"weight decay {args.weight_decay} (2-D tensors), grad clip {args.grad_clip}, seed "
        f"{args.seed}")

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    rng = np.random.default_rng(args.seed)
    allh = np.arange(0, len(held) - T - 1, T)  # every held-out window, for the final loss
    hstarts = allh[np.linspace(0, len(allh) - 1, min(args.eval_seqs, len(allh))).astype(int)]
    held_batches = [windows(held, hstarts[i:i + 32], T) for i in range(0, len(hstarts), 32)]
    log(f"  held-out evaluation: {len(hstarts)} of the {len(allh)} windows of {T} tokens, "
        f"evenly spread (all of them for the final loss)")

    csv = open(os.path.join(args.out, "train_log.csv"), "w")
    csv.write("step,train_loss,lr,elapsed_s,heldout_loss\n")
    train_pts, held_pts = [], []
    t0 = time.time()
    run_loss, run_n, step, cut = 0.0, 0, 0, False
    last_train = float("nan")
    for step in range(args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(train) - T - 1, size=args.batch)
        x, y = windows(train, starts, T)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        done = step + 1
        elapsed = time.time() - t0
        last = done == args.steps or elapsed > args.max_seconds
        if done % args.log_every == 0 or last:
            hl = ""
            if done % args.eval_every == 0 or last:
                hl = evaluate(model, held_batches)
                held_pts.append((done, hl))
            last_train = run_loss / run_n
            train_pts.append((done, last_train))
            csv.write(f"{done},{last_train:.5f},{lr:.6g},{elapsed:.1f},"
                      f"{'' if hl == '' else f'{hl:.5f}'}\n")
            csv.flush()
            log(f"step {done:5d}  train {last_train:.4f}  lr {lr:.2e}  {elapsed:6.1f} s"
                + ("" if hl == "" else f"  held-out {hl:.4f}"))
            run_loss, run_n = 0.0, 0
        if elapsed > args.max_seconds and done < args.steps:
            cut = True
            log(f"stopping at step {done}: {elapsed:.0f} s > --max-seconds {args.max_seconds}")
            break
    train_seconds = time.time() - t0
    steps_done = step + 1

    # Final losses: train over a fixed set of training windows, held-out over all of it.
    model.eval()
    fstarts = np.random.default_rng(args.seed + 1).integers(0, len(train) - T - 1, size=256)
    train_final = evaluate(model, [windows(train, fstarts[i:i + 32], T) for i in range(0, 256, 32)])
    heldout_final = evaluate(model, [windows(held, allh[i:i + 32], T)
                                     for i in range(0, len(allh), 32)])
    log(f"trained {steps_done} steps in {train_seconds:.1f} s ({train_seconds / steps_done:.2f} s/step)"
        + (" -- cut short by --max-seconds" if cut else ""))
    log(f"final loss (quantized forward, nats/token): train {train_final:.4f} (256 windows), "
        f"held-out {heldout_final:.4f} ({len(allh)} windows); last logged running train loss "
        f"{last_train:.4f}")

    entries = export(model, args.out)
    emb, onorm, norms, wq = load_export(args.out, cfg)
    x, _ = windows(held, allh[:8], T)
    with torch.no_grad():
        ref = model(x)
        got = forward(cfg, x, emb, onorm, norms, wq, model.rope_cos, model.rope_sin)
    diff = (ref - got).abs().max().item()
    log(f"export: {len(entries)} tensors, {os.path.getsize(os.path.join(args.out, 'weights.bin'))} "
        f"bytes; reloaded from the codes and scales, logits on 8 held-out windows: max |diff| "
        f"{diff:.3g} (max |logit| {ref.abs().max().item():.3g})")
    assert diff < 1e-3, f"export check failed: {diff}"
    zeros = []
    for e in entries:
        if e["dtype"] == "i8":
            n = int(np.prod(e["shape"]))
            a = np.frombuffer(open(os.path.join(args.out, "weights.bin"), "rb").read(),
                              dtype="i1", count=n, offset=e["offset"])
            zeros.append((a == 0).mean())
    log(f"  ternary codes: {100 * np.mean(zeros):.1f}% zeros on average "
        f"(min {100 * min(zeros):.1f}%, max {100 * max(zeros):.1f}%)")

    for p in ("The quick brown fox", "fn main() {", "# Thresholds"):
        ids = greedy(model, tok, p, args.sample_tokens)
        log(f"sample (greedy, quantized forward, {args.sample_tokens} tokens) {p!r}:")
        log("  " + repr(tok.decode(ids[1:])))

    conf = dict(cfg)
    conf.update({"seed": args.seed, "steps": steps_done, "steps_planned": args.steps,
                 "batch": args.batch, "seq_len": T, "lr": args.lr,
                 "train_loss_final": round(train_final, 5),
                 "heldout_loss_final": round(heldout_final, 5),
                 "train_seconds": round(train_seconds, 1), "torch_version": torch.__version__,
                 "export_check_max_abs_diff": diff,
                 "corpus": {"files": len(files), "bytes": nbytes, "tokens": int(ntok),
                            "source": source, "heldout_tokens": int(len(held))}})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)
    loss_svg(os.path.join(args.out, "loss_curve.svg"), train_pts, held_pts,
             f"tiny BitNet b1.58 ({args.act}), {steps_done} steps")
    log(f"done in {time.time() - t_start:.1f} s total")


if __name__ == "__main__":
    main()
