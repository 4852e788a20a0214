#!/usr/bin/python3
"""Independent plain-PyTorch reference for Switchyard's model code.

Follows the Hugging Face `transformers` eager modeling semantics for
GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and
BertModel (+ sentence-transformers Pooling/Normalize), and PEFT LoRA adapters.
Written from the published semantics; neither transformers, peft nor
safetensors is imported (none is installed here). Only torch and numpy.

Library use:
    import reference as ref
    model = ref.load_model("tests/data/model/llama", dtype=torch.float64)
    model.apply_lora(ref.load_adapter("tests/data/model/adapters/llama-qv"))
    logits = model.forward(input_ids, attention_mask, position_ids)

Command line (always run with /usr/bin/python3, the Debian Python with torch):
    reference.py selftest
    reference.py create-model ARCH OUT [--seed N] [--set KEY=JSON ...] [--pooling mean|cls|...] [--no-normalize]
    reference.py create-adapter BASE_DIR OUT --targets q_proj,v_proj --r 4 --alpha 8 [--rslora] [--layers 1,2] [--seed N]
    reference.py shard SRC_DIR OUT --shards N
    reference.py make-reference MODEL_DIR [--adapter NAME=DIR ...] [--seed N] [--out FILE]
    reference.py forward MODEL_DIR --ids 1,2,3[/4,5,6 ...] [--adapter DIR] [--merge] [--dtype float32|float64] [--out FILE]
    reference.py compare A.safetensors B.safetensors   (B = the reference; also reports real positions)
    reference.py dump FILE.safetensors
"""

import argparse
import json
import math
import os
import re
import shutil
import struct
import sys

import numpy as np
import torch

TRANSFORMERS_VERSION = "4.46.3"  # the version string written into generated configs

# --------------------------------------------------------------------------------------
# safetensors: own reader/writer
#   file = u64 little-endian N | N bytes JSON header (space padded to a multiple of 8)
#          | data buffer.  header = {"__metadata__": {str: str}, name: {"dtype", "shape",
#          "data_offsets": [begin, end]}} with offsets relative to the data buffer.
# --------------------------------------------------------------------------------------

_ST_DTYPES = {
    # name: (torch dtype, element size, numpy dtype used for the raw bytes)
    "BOOL": (torch.bool, 1, np.bool_),
    "U8": (torch.uint8, 1, np.uint8),
    "I8": (torch.int8, 1, np.int8),
    "I16": (torch.int16, 2, np.int16),
    "I32": (torch.int32, 4, np.int32),
    "I64": (torch.int64, 8, np.int64),
    "F16": (torch.float16, 2, np.float16),
    "BF16": (torch.bfloat16, 2, np.uint16),
    "F32": (torch.float32, 4, np.float32),
    "F64": (torch.float64, 8, np.float64),
}
_TORCH_TO_ST = {v[0]: k for k, v in _ST_DTYPES.items()}
# The Rust library orders tensors by dtype (descending enum order, i.e. widest first
# among these) and then by name; we mirror it. Readers must not depend on the order.
_ST_DTYPE_RANK = {"BOOL": 0, "U8": 1, "I8": 2, "I16": 3, "U16": 4, "F16": 5, "BF16": 6,
                  "I32": 7, "U32": 8, "F32": 9, "F64": 10, "I64": 11, "U64": 12}


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def st_save(path, tensors, metadata=None):
    """Writes a dict name -> torch.Tensor (or numpy array) as safetensors."""
    items = []
    for name, t in tensors.items():
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(t))
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        items.append((name, t))
    items.sort(key=lambda it: (-_ST_DTYPE_RANK[_TORCH_TO_ST[it[1].dtype]], it[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, t in items:
        b = _tensor_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def st_read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
    return n, header


def st_load(path):
    """Returns (dict name -> torch.Tensor, metadata dict or None)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} past end of file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {dt}")
        tdt, size, npdt = _ST_DTYPES[dt]
        b, e = info["data_offsets"]
        shape = info["shape"]
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * size or e > len(data):
            raise ValueError(f"{path}: {name}: bad data_offsets {b},{e} for shape {shape} {dt}")
        arr = np.frombuffer(data[b:e], dtype=npdt).reshape(shape).copy()
        if dt == "BF16":
            t = torch.from_numpy(arr.astype(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(arr)
        out[name] = t
    return out, meta


# --------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------

ARCHS = {
    "GPT2LMHeadModel": "gpt2",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "BertModel": "bert",
}

# Tensors that may sit in real checkpoints but are not parameters (non-persistent
# buffers in current transformers, persisted by old versions). Ignored on load.
_IGNORED = [
    re.compile(r".*\.attn\.(masked_)?bias$"),          # GPT-2 causal-mask buffers (old saves)
    re.compile(r".*rotary_emb\.inv_freq$"),            # old Llama saves
    re.compile(r"^embeddings\.position_ids$"),          # old BERT saves (I64 [1, max_pos])
]


def read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def load_weights(model_dir):
    """Loads model.safetensors or the shards named by model.safetensors.index.json."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        w, _ = st_load(single)
        return w
    if os.path.isfile(index):
        idx = read_json(index)
        weights = {}
        for shard in sorted(set(idx["weight_map"].values())):
            part, _ = st_load(os.path.join(model_dir, shard))
            for k, v in part.items():
                if idx["weight_map"].get(k) != shard:
                    raise ValueError(f"{shard}: tensor {k} not mapped to this shard in the index")
                weights[k] = v
        missing = set(idx["weight_map"]) - set(weights)
        if missing:
            raise ValueError(f"index names tensors missing from shards: {sorted(missing)[:5]}")
        return weights
    raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def _canonical_names(kind, weights):
    """Maps alternative-but-real layouts onto the names our models use."""
    w = {k: v for k, v in weights.items() if not any(p.match(k) for p in _IGNORED)}
    if kind == "gpt2" and not any(k.startswith("transformer.") for k in w):
        # the original hub `gpt2` was saved from GPT2Model: no `transformer.` prefix
        w = {("transformer." + k if not k.startswith("lm_head.") else k): v for k, v in w.items()}
    if kind == "bert" and all(k.startswith("bert.") or k.startswith("cls.") for k in w):
        w = {k[len("bert."):]: v for k, v in w.items() if k.startswith("bert.")}
    return w


def model_kind(config):
    archs = config.get("architectures") or []
    for a in archs:
        if a in ARCHS:
            return ARCHS[a]
    mt = config.get("model_type")
    if mt in ("gpt2", "llama", "mistral", "qwen2", "bert"):
        return mt
    raise ValueError(f"unsupported architectures {archs} / model_type {mt}")


def load_model(model_dir, dtype=torch.float32):
    config = read_json(os.path.join(model_dir, "config.json"))
    kind = model_kind(config)
    weights = _canonical_names(kind, load_weights(model_dir))
    cls = {"gpt2": GPT2, "llama": LlamaFamily, "mistral": LlamaFamily, "qwen2": LlamaFamily,
           "bert": Bert}[kind]
    m = cls(config, weights, dtype)
    m.kind = kind
    m.model_dir = model_dir
    if kind == "bert":
        m.load_sentence_transformers(model_dir)
    return m


# --------------------------------------------------------------------------------------
# LoRA (PEFT format)
# --------------------------------------------------------------------------------------

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")


def peft_target_matches(cfg, key):
    """PEFT's check_target_module_exists for LoRA (target_modules / layers_to_transform)."""
    tm = cfg.get("target_modules")
    if tm is None:
        raise ValueError("adapter_config.json has no target_modules")
    if isinstance(tm, str):
        if tm.lower() == "all-linear":
            raise ValueError("target_modules 'all-linear' is resolved by PEFT at creation; not in saved configs")
        return re.fullmatch(tm, key) is not None
    if key in tm:
        return True
    found = any(key.endswith("." + t) for t in tm)
    layers = cfg.get("layers_to_transform")
    if found and layers is not None:
        pattern = cfg.get("layers_pattern")
        m = None
        if not pattern:
            m = re.match(r".*\.[^.]*\.(\d+)\.", key)
        else:
            for p in ([pattern] if isinstance(pattern, str) else pattern):
                m = re.match(rf".*\.{p}\.(\d+)\.", key)
                if m is not None:
                    break
        if m is None:
            return False
        idx = int(m.group(1))
        return idx == layers if isinstance(layers, int) else idx in layers
    return found


def _pattern_value(pattern, key, default):
    # PEFT: first pattern key k (dict order) with re.match(rf"(.*\.)?{k}$", key)
    for k, v in (pattern or {}).items():
        if re.match(rf"(.*\.)?{k}$", key):
            return v
    return default


class LoraAdapter:
    def __init__(self, config, modules, path=None):
        self.config = config      # adapter_config.json dict
        self.modules = modules    # module path -> (A [r, in], B [out, r], scale)
        self.path = path


def load_adapter(adapter_dir):
    cfg = read_json(os.path.join(adapter_dir, "adapter_config.json"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"peft_type {cfg.get('peft_type')} unsupported")
    if cfg.get("use_dora"):
        raise ValueError("DoRA adapters unsupported")
    if cfg.get("bias", "none") != "none":
        raise ValueError("LoRA bias other than 'none' unsupported")
    tensors, _ = st_load(os.path.join(adapter_dir, "adapter_model.safetensors"))
    ab = {}
    for name, t in tensors.items():
        m = _LORA_KEY.match(name)
        if not m:
            raise ValueError(f"unexpected adapter tensor {name}")
        ab.setdefault(m.group(1), {})[m.group(2)] = t
    modules = {}
    for path, d in ab.items():
        if set(d) != {"A", "B"}:
            raise ValueError(f"{path}: needs lora_A and lora_B")
        A, B = d["A"], d["B"]
        r = A.shape[0]
        if B.shape[1] != r:
            raise ValueError(f"{path}: lora_A {list(A.shape)} / lora_B {list(B.shape)} ranks differ")
        r_cfg = _pattern_value(cfg.get("rank_pattern"), path, cfg["r"])
        if r_cfg != r:
            raise ValueError(f"{path}: rank {r} in file, {r_cfg} in config")
        alpha = _pattern_value(cfg.get("alpha_pattern"), path, cfg["lora_alpha"])
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        modules[path] = (A, B, scale)
    return LoraAdapter(cfg, modules, adapter_dir)


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------

def act_fn(name):
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        if name == "gelu_fast":
            return lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "gelu":
        return lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("silu", "swish"):
        return lambda x: x * torch.sigmoid(x)
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"activation {name} unsupported")


def hf_position_ids(attention_mask):
    """HF generate()'s convention: cumsum(mask) - 1, padding positions set to 1."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def attention(q, k, v, allowed, scale):
    """q [B,H,T,D], k/v [B,H,S,D], allowed bool [B,1,T,S]. Softmax in >= fp32 (HF eager)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    sdt = torch.float64 if scores.dtype == torch.float64 else torch.float32
    probs = torch.softmax(scores.to(sdt), dim=-1).to(q.dtype)
    return torch.matmul(probs, v)


def causal_allowed(attention_mask, T, sliding_window=None):
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    allowed = j <= i
    if sliding_window is not None:
        allowed = allowed & (j > i - sliding_window)
    allowed = allowed.view(1, 1, T, T)
    if attention_mask is not None:
        allowed = allowed & (attention_mask.view(-1, 1, 1, T) != 0)
    return allowed


class Base:
    """Weights are held in compute dtype; `linear` applies LoRA when attached."""

    conv1d = False  # GPT-2 stores weights [in, out]

    def __init__(self, config, weights, dtype):
        self.config = config
        self.dtype = dtype
        self.w = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        self.lora = {}
        self.used = set()

    def W(self, name):
        if name not in self.w:
            raise KeyError(f"checkpoint lacks tensor {name}")
        self.used.add(name)
        return self.w[name]

    def linear(self, path, x, bias=True):
        w = self.W(path + ".weight")
        y = torch.matmul(x, w) if self.conv1d else torch.matmul(x, w.t())
        if bias and (path + ".bias") in self.w:
            y = y + self.W(path + ".bias")
        if path in self.lora:
            A, B, s = self.lora[path]
            y = y + torch.matmul(torch.matmul(x, A.t()), B.t()) * s
        return y

    def lora_candidates(self):
        """Module paths PEFT could target: every Linear/Conv1D with a weight in the checkpoint."""
        return sorted(k[:-len(".weight")] for k, v in self.w.items()
                      if k.endswith(".weight") and v.dim() == 2 and self._is_linear(k))

    def apply_lora(self, adapter, merge=False):
        cfg = adapter.config
        expected = {p for p in self.lora_candidates() if peft_target_matches(cfg, p)}
        got = set(adapter.modules)
        if expected != got:
            raise ValueError(f"adapter modules differ from what target_modules/layers_to_transform select:"
                             f" only in file {sorted(got - expected)[:6]}, only selected {sorted(expected - got)[:6]}")
        fifo_cfg = bool(cfg.get("fan_in_fan_out", False))
        if fifo_cfg != self.conv1d:
            # PEFT warns and forces the right value; so do we
            print(f"warning: adapter fan_in_fan_out={fifo_cfg} but base modules are "
                  f"{'Conv1D' if self.conv1d else 'Linear'}", file=sys.stderr)
        for path, (A, B, s) in adapter.modules.items():
            w = self.W(path + ".weight")
            in_f, out_f = (w.shape[0], w.shape[1]) if self.conv1d else (w.shape[1], w.shape[0])
            if A.shape[1] != in_f or B.shape[0] != out_f:
                raise ValueError(f"{path}: lora shapes {list(A.shape)} {list(B.shape)} vs in {in_f} out {out_f}")
            A = A.to(self.dtype)
            B = B.to(self.dtype)
            if merge:
                delta = torch.matmul(B, A) * s        # [out, in]
                self.w[path + ".weight"] = w + (delta.t() if self.conv1d else delta)
            else:
                if path in self.lora:
                    raise ValueError(f"{path}: a second unmerged adapter is not supported")
                self.lora[path] = (A, B, s)
        return self


def rms_norm(x, w, eps):
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(cdt)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return w * h.to(x.dtype)


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


# --------------------------------------------------------------------------------------
# Llama / Mistral / Qwen2
# --------------------------------------------------------------------------------------

def rope_inv_freq(config, head_dim, dtype):
    base = float(config.get("rope_theta", 10000.0))
    prf = float(config.get("partial_rotary_factor", 1.0) or 1.0)
    dim = int(head_dim * prf)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(cdt) / dim))
    rs = config.get("rope_scaling")
    if not rs:
        return inv
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype == "default":
        return inv
    if rtype == "linear":
        return inv / float(rs["factor"])
    if rtype == "llama3":
        factor = float(rs["factor"])
        low = float(rs["low_freq_factor"])
        high = float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        low_wavelen = old / low
        high_wavelen = old / high
        wavelen = 2 * math.pi / inv
        inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, inv_l)
    raise ValueError(f"rope_scaling type {rtype} unsupported")


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaFamily(Base):
    def __init__(self, config, weights, dtype):
        super().__init__(config, weights, dtype)
        c = config
        self.L = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.KV = c.get("num_key_value_heads") or self.H
        self.hidden = c["hidden_size"]
        self.D = c.get("head_dim") or self.hidden // self.H
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.act = act_fn(c.get("hidden_act", "silu"))
        # LlamaConfig, MistralConfig and Qwen2Config all default tie_word_embeddings to False
        self.tied = bool(c.get("tie_word_embeddings", False))
        mt = c.get("model_type")
        sw = None
        if mt == "mistral":
            sw = c.get("sliding_window")
        elif mt == "qwen2" and c.get("use_sliding_window"):
            sw = c.get("sliding_window")
            # Qwen2 applies it only to layers >= max_window_layers; we only support "all or none"
            if c.get("max_window_layers", 0) != 0:
                raise ValueError("qwen2 use_sliding_window with max_window_layers != 0 unsupported")
        self.sliding_window = sw
        self.inv_freq = rope_inv_freq(c, self.D, dtype)
        self.attention_scaling = 1.0  # default/linear/llama3 rope types all have 1.0

    def _is_linear(self, name):
        return not name.endswith("embed_tokens.weight")

    def rope(self, position_ids):
        cdt = torch.float64 if self.dtype == torch.float64 else torch.float32
        freqs = position_ids.to(cdt).unsqueeze(-1) * self.inv_freq.view(1, 1, -1)  # [B,T,D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(self.dtype), (emb.sin() * self.attention_scaling).to(self.dtype)

    def forward(self, input_ids, attention_mask=None, position_ids=None, capture=None):
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = hf_position_ids(attention_mask) if attention_mask is not None else \
                torch.arange(T).unsqueeze(0).expand(B, T)
        h = self.W("model.embed_tokens.weight")[input_ids]
        cos, sin = self.rope(position_ids)
        cos = cos.unsqueeze(1)
        sin = sin.unsqueeze(1)
        allowed = causal_allowed(attention_mask, T, self.sliding_window)
        rep = self.H // self.KV
        if capture is not None:
            capture["hidden_states.0"] = h
        for l in range(self.L):
            p = f"model.layers.{l}."
            x = rms_norm(h, self.W(p + "input_layernorm.weight"), self.eps)
            q = self.linear(p + "self_attn.q_proj", x).view(B, T, self.H, self.D).transpose(1, 2)
            k = self.linear(p + "self_attn.k_proj", x).view(B, T, self.KV, self.D).transpose(1, 2)
            v = self.linear(p + "self_attn.v_proj", x).view(B, T, self.KV, self.D).transpose(1, 2)
            rd = self.inv_freq.shape[0] * 2
            if rd == self.D:
                q = q * cos + rotate_half(q) * sin
                k = k * cos + rotate_half(k) * sin
            else:  # partial rotary
                q = torch.cat((q[..., :rd] * cos + rotate_half(q[..., :rd]) * sin, q[..., rd:]), -1)
                k = torch.cat((k[..., :rd] * cos + rotate_half(k[..., :rd]) * sin, k[..., rd:]), -1)
            # repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            a = attention(q, k, v, allowed, self.D ** -0.5)
            a = a.transpose(1, 2).reshape(B, T, self.H * self.D)
            h = h + self.linear(p + "self_attn.o_proj", a)
            x = rms_norm(h, self.W(p + "post_attention_layernorm.weight"), self.eps)
            m = self.act(self.linear(p + "mlp.gate_proj", x)) * self.linear(p + "mlp.up_proj", x)
            h = h + self.linear(p + "mlp.down_proj", m)
            if capture is not None:
                capture[f"hidden_states.{l + 1}"] = h
        h = rms_norm(h, self.W("model.norm.weight"), self.eps)
        if capture is not None:
            capture["final_hidden"] = h
        if self.tied:
            if "lm_head.weight" in self.w:
                raise ValueError("tie_word_embeddings is true but the checkpoint has lm_head.weight")
            return torch.matmul(h, self.W("model.embed_tokens.weight").t())
        return self.linear("lm_head", h)


# --------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------

class GPT2(Base):
    conv1d = True

    def __init__(self, config, weights, dtype):
        super().__init__(config, weights, dtype)
        c = config
        self.L = c["n_layer"]
        self.H = c["n_head"]
        self.E = c["n_embd"]
        self.D = self.E // self.H
        self.eps = c.get("layer_norm_epsilon", 1e-5)
        self.act = act_fn(c.get("activation_function", "gelu_new"))
        self.scale_attn = c.get("scale_attn_weights", True)
        self.inv_layer = c.get("scale_attn_by_inverse_layer_idx", False)

    def _is_linear(self, name):
        return not (name.endswith("wte.weight") or name.endswith("wpe.weight"))

    def forward(self, input_ids, attention_mask=None, position_ids=None, capture=None):
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = hf_position_ids(attention_mask) if attention_mask is not None else \
                torch.arange(T).unsqueeze(0).expand(B, T)
        h = self.W("transformer.wte.weight")[input_ids] + self.W("transformer.wpe.weight")[position_ids]
        allowed = causal_allowed(attention_mask, T)
        if capture is not None:
            capture["hidden_states.0"] = h
        for l in range(self.L):
            p = f"transformer.h.{l}."
            x = layer_norm(h, self.W(p + "ln_1.weight"), self.W(p + "ln_1.bias"), self.eps)
            qkv = self.linear(p + "attn.c_attn", x)
            q, k, v = qkv.split(self.E, dim=-1)
            q, k, v = [t.view(B, T, self.H, self.D).transpose(1, 2) for t in (q, k, v)]
            scale = 1.0
            if self.scale_attn:
                scale /= float(self.D) ** 0.5
            if self.inv_layer:
                scale /= float(l + 1)
            a = attention(q, k, v, allowed, scale).transpose(1, 2).reshape(B, T, self.E)
            h = h + self.linear(p + "attn.c_proj", a)
            x = layer_norm(h, self.W(p + "ln_2.weight"), self.W(p + "ln_2.bias"), self.eps)
            h = h + self.linear(p + "mlp.c_proj", self.act(self.linear(p + "mlp.c_fc", x)))
            if capture is not None:
                capture[f"hidden_states.{l + 1}"] = h
        h = layer_norm(h, self.W("transformer.ln_f.weight"), self.W("transformer.ln_f.bias"), self.eps)
        if capture is not None:
            capture["final_hidden"] = h
        # GPT2LMHeadModel always ties lm_head to wte; checkpoints omit lm_head.weight
        if "lm_head.weight" in self.w:
            lm = self.W("lm_head.weight")
            if not torch.equal(lm, self.w["transformer.wte.weight"]):
                raise ValueError("GPT-2 lm_head.weight differs from transformer.wte.weight")
        return torch.matmul(h, self.W("transformer.wte.weight").t())


# --------------------------------------------------------------------------------------
# BERT + sentence-transformers pooling
# --------------------------------------------------------------------------------------

class Bert(Base):
    def __init__(self, config, weights, dtype):
        super().__init__(config, weights, dtype)
        c = config
        self.L = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.E = c["hidden_size"]
        self.D = self.E // self.H
        self.eps = c.get("layer_norm_eps", 1e-12)
        self.act = act_fn(c.get("hidden_act", "gelu"))
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings supported")
        self.pooling = None
        self.normalize = False

    def _is_linear(self, name):
        return "embeddings" not in name

    def load_sentence_transformers(self, model_dir):
        mpath = os.path.join(model_dir, "modules.json")
        if not os.path.isfile(mpath):
            return
        for mod in read_json(mpath):
            t = mod["type"]
            if t.endswith(".Pooling"):
                self.pooling = read_json(os.path.join(model_dir, mod["path"], "config.json"))
            elif t.endswith(".Normalize"):
                self.normalize = True
            elif t.endswith(".Transformer"):
                if mod.get("path", "") not in ("", "."):
                    raise ValueError("Transformer module outside the root dir unsupported")
            else:
                raise ValueError(f"sentence-transformers module {t} unsupported")

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, capture=None):
        """Returns (last_hidden_state [B,T,E], pooler_output [B,E])."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T).unsqueeze(0).expand(B, T)  # BERT ignores padding here
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        e = (self.W("embeddings.word_embeddings.weight")[input_ids]
             + self.W("embeddings.token_type_embeddings.weight")[token_type_ids]
             + self.W("embeddings.position_embeddings.weight")[position_ids])
        h = layer_norm(e, self.W("embeddings.LayerNorm.weight"), self.W("embeddings.LayerNorm.bias"), self.eps)
        allowed = (attention_mask != 0).view(B, 1, 1, T)
        if capture is not None:
            capture["hidden_states.0"] = h
        for l in range(self.L):
            p = f"encoder.layer.{l}."
            q, k, v = [self.linear(p + "attention.self." + n, h).view(B, T, self.H, self.D).transpose(1, 2)
                       for n in ("query", "key", "value")]
            a = attention(q, k, v, allowed, 1.0 / math.sqrt(self.D)).transpose(1, 2).reshape(B, T, self.E)
            a = layer_norm(self.linear(p + "attention.output.dense", a) + h,
                           self.W(p + "attention.output.LayerNorm.weight"),
                           self.W(p + "attention.output.LayerNorm.bias"), self.eps)
            i = self.act(self.linear(p + "intermediate.dense", a))
            h = layer_norm(self.linear(p + "output.dense", i) + a, self.W(p + "output.LayerNorm.weight"),
                           self.W(p + "output.LayerNorm.bias"), self.eps)
            if capture is not None:
                capture[f"hidden_states.{l + 1}"] = h
        pooled = None
        if "pooler.dense.weight" in self.w:
            pooled = torch.tanh(self.linear("pooler.dense", h[:, 0]))
        return h, pooled

    def sentence_embedding(self, last_hidden, attention_mask):
        """sentence-transformers Pooling (+ Normalize when listed in modules.json)."""
        cfg = self.pooling or {"pooling_mode_mean_tokens": True}
        mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        outs = []
        if cfg.get("pooling_mode_cls_token"):
            outs.append(last_hidden[:, 0])
        if cfg.get("pooling_mode_max_tokens"):
            outs.append(last_hidden.masked_fill(mask == 0, -1e9).max(dim=1).values)
        if cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
            s = (last_hidden * mask).sum(1)
            n = mask.sum(1).clamp(min=1e-9)
            if cfg.get("pooling_mode_mean_tokens"):
                outs.append(s / n)
            if cfg.get("pooling_mode_mean_sqrt_len_tokens"):
                outs.append(s / torch.sqrt(n))
        if cfg.get("pooling_mode_weightedmean_tokens"):
            wts = torch.arange(1, last_hidden.shape[1] + 1, dtype=last_hidden.dtype).view(1, -1, 1) * mask
            outs.append((last_hidden * wts).sum(1) / wts.sum(1).clamp(min=1e-9))
        if cfg.get("pooling_mode_lasttoken"):
            T = attention_mask.shape[1]
            last = (attention_mask * torch.arange(T).view(1, T)).argmax(dim=1)  # last position with mask 1
            outs.append(last_hidden[torch.arange(last_hidden.shape[0]), last])
        if not outs:
            raise ValueError("pooling config selects no mode")
        emb = torch.cat(outs, dim=1)
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------

def greedy(model, prompt_ids, n):
    """n greedy tokens after prompt_ids [T] (full recompute each step, no cache, no EOS stop).
    Returns (ids [n], margins [n]) where margin = top1 - top2 logit at each step."""
    ids = prompt_ids.clone().view(1, -1)
    out, margins = [], []
    for _ in range(n):
        logits = model.forward(ids)[0, -1]
        top = torch.topk(logits.double(), 2)
        nxt = int(top.indices[0])
        out.append(nxt)
        margins.append(float(top.values[0] - top.values[1]))
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return torch.tensor(out, dtype=torch.int64), margins


# --------------------------------------------------------------------------------------
# Random checkpoints in the HF layout
# --------------------------------------------------------------------------------------

def _dump_json(path, obj):
    # transformers and PEFT write indent=2, sort_keys=True plus a final newline
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Rng:
    """numpy PCG64 stream -> float32 torch tensors (reproducible across torch versions)."""

    def __init__(self, seed):
        self.g = np.random.Generator(np.random.PCG64(seed))

    def normal(self, shape, std, mean=0.0):
        return torch.from_numpy((mean + std * self.g.standard_normal(size=shape)).astype(np.float32))

    def ints(self, lo, hi, n):
        return [int(x) for x in self.g.integers(lo, hi, size=n)]


def default_config(arch):
    v = TRANSFORMERS_VERSION
    if arch == "gpt2":
        return {
            "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
            "bos_token_id": 255, "embd_pdrop": 0.1, "eos_token_id": 255, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_inner": None,
            "n_layer": 2, "n_positions": 64, "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
            "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
            "summary_type": "cls_index", "summary_use_proj": True, "torch_dtype": "float32",
            "transformers_version": v, "use_cache": True, "vocab_size": 256,
        }
    if arch == "llama":
        return {
            "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 1, "eos_token_id": 2, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
            "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 128,
            "mlp_bias": False, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
            "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
            "transformers_version": v, "use_cache": True, "vocab_size": 256,
        }
    if arch == "mistral":
        return {
            "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
            "eos_token_id": 2, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
            "initializer_range": 0.02, "intermediate_size": 176, "max_position_embeddings": 128,
            "model_type": "mistral", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": None,
            "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": v,
            "use_cache": True, "vocab_size": 256,
        }
    if arch == "qwen2":
        return {
            "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 254,
            "eos_token_id": 255, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
            "intermediate_size": 128, "max_position_embeddings": 128, "max_window_layers": 2,
            "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 128,
            "tie_word_embeddings": True, "torch_dtype": "float32", "transformers_version": v,
            "use_cache": True, "use_sliding_window": False, "vocab_size": 256,
        }
    if arch == "bert":
        return {
            "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "classifier_dropout": None,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 64, "initializer_range": 0.02,
            "intermediate_size": 128, "layer_norm_eps": 1e-12, "max_position_embeddings": 64,
            "model_type": "bert", "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 0,
            "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": v,
            "type_vocab_size": 2, "use_cache": True, "vocab_size": 256,
        }
    raise ValueError(f"unknown arch {arch}")


def random_weights(arch, c, rng):
    """Random weights with HF names. Scales chosen so activations stay O(1), every parameter
    (norm gains, biases, positions) visibly affects the outputs, and the residual branches
    (output projections x2) outweigh the token embedding (std 0.25), so that greedy decoding
    of tied-embedding models does not just repeat the last token."""
    w = {}

    def lin(name, n_in, n_out, bias=False, conv1d=False, bias_std=0.1, gain=1.0):
        shape = (n_in, n_out) if conv1d else (n_out, n_in)
        w[name + ".weight"] = rng.normal(shape, gain / math.sqrt(n_in))
        if bias:
            w[name + ".bias"] = rng.normal((n_out,), bias_std)

    def gain(name, n):
        w[name] = rng.normal((n,), 0.1, mean=1.0)

    if arch == "gpt2":
        E, V, L = c["n_embd"], c["vocab_size"], c["n_layer"]
        inner = c.get("n_inner") or 4 * E
        w["transformer.wte.weight"] = rng.normal((V, E), 0.25)
        w["transformer.wpe.weight"] = rng.normal((c["n_positions"], E), 0.3)
        for l in range(L):
            p = f"transformer.h.{l}."
            gain(p + "ln_1.weight", E)
            w[p + "ln_1.bias"] = rng.normal((E,), 0.1)
            lin(p + "attn.c_attn", E, 3 * E, True, True)
            lin(p + "attn.c_proj", E, E, True, True, gain=2.0)
            gain(p + "ln_2.weight", E)
            w[p + "ln_2.bias"] = rng.normal((E,), 0.1)
            lin(p + "mlp.c_fc", E, inner, True, True)
            lin(p + "mlp.c_proj", inner, E, True, True, gain=2.0)
        gain("transformer.ln_f.weight", E)
        w["transformer.ln_f.bias"] = rng.normal((E,), 0.1)
        return w
    if arch in ("llama", "mistral", "qwen2"):
        E, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
        H = c["num_attention_heads"]
        KV = c.get("num_key_value_heads") or H
        D = c.get("head_dim") or E // H
        I = c["intermediate_size"]
        qkv_bias = arch == "qwen2" or c.get("attention_bias", False)
        o_bias = c.get("attention_bias", False) and arch == "llama"
        mlp_bias = c.get("mlp_bias", False)
        w["model.embed_tokens.weight"] = rng.normal((V, E), 0.25)
        for l in range(L):
            p = f"model.layers.{l}."
            gain(p + "input_layernorm.weight", E)
            lin(p + "self_attn.q_proj", E, H * D, qkv_bias, bias_std=0.3)
            lin(p + "self_attn.k_proj", E, KV * D, qkv_bias, bias_std=0.3)
            lin(p + "self_attn.v_proj", E, KV * D, qkv_bias, bias_std=0.3)
            lin(p + "self_attn.o_proj", H * D, E, o_bias, gain=2.0)
            gain(p + "post_attention_layernorm.weight", E)
            lin(p + "mlp.gate_proj", E, I, mlp_bias)
            lin(p + "mlp.up_proj", E, I, mlp_bias)
            lin(p + "mlp.down_proj", I, E, mlp_bias, gain=2.0)
        gain("model.norm.weight", E)
        if not c.get("tie_word_embeddings", False):
            w["lm_head.weight"] = rng.normal((V, E), 0.25)
        return w
    if arch == "bert":
        E, V, L, I = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"], c["intermediate_size"]
        # small embeddings like real BERTs (std ~0.05): the embedding LayerNorm's eps then matters
        w["embeddings.word_embeddings.weight"] = rng.normal((V, E), 0.05)
        w["embeddings.position_embeddings.weight"] = rng.normal((c["max_position_embeddings"], E), 0.03)
        w["embeddings.token_type_embeddings.weight"] = rng.normal((c["type_vocab_size"], E), 0.03)
        gain("embeddings.LayerNorm.weight", E)
        w["embeddings.LayerNorm.bias"] = rng.normal((E,), 0.1)
        for l in range(L):
            p = f"encoder.layer.{l}."
            for n in ("query", "key", "value"):
                lin(p + "attention.self." + n, E, E, True)
            lin(p + "attention.output.dense", E, E, True)
            gain(p + "attention.output.LayerNorm.weight", E)
            w[p + "attention.output.LayerNorm.bias"] = rng.normal((E,), 0.1)
            lin(p + "intermediate.dense", E, I, True)
            lin(p + "output.dense", I, E, True)
            gain(p + "output.LayerNorm.weight", E)
            w[p + "output.LayerNorm.bias"] = rng.normal((E,), 0.1)
        lin("pooler.dense", E, E, True)
        return w
    raise ValueError(arch)


def create_model(arch, out, seed, overrides=None, pooling="mean", normalize=True, legacy_position_ids=False):
    c = default_config(arch)
    for k, v in (overrides or {}).items():
        c[k] = v
    if arch in ("llama", "mistral") and c.get("head_dim") is not None and "head_dim" not in (overrides or {}):
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    rng = Rng(seed)
    w = random_weights(arch, c, rng)
    if legacy_position_ids and arch == "bert":
        w["embeddings.position_ids"] = torch.arange(c["max_position_embeddings"], dtype=torch.int64).view(1, -1)
    store = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[c["torch_dtype"]]
    w = {k: (v.to(store) if v.is_floating_point() else v) for k, v in w.items()}
    os.makedirs(out, exist_ok=True)
    _dump_json(os.path.join(out, "config.json"), c)
    st_save(os.path.join(out, "model.safetensors"), w, {"format": "pt"})
    if arch != "bert":
        _dump_json(os.path.join(out, "generation_config.json"), {
            "_from_model_config": True, "bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"],
            "transformers_version": TRANSFORMERS_VERSION})
    else:
        # sentence-transformers layout around a BertModel
        mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            mods.append({"idx": 2, "name": "2", "path": "2_Normalize",
                         "type": "sentence_transformers.models.Normalize"})
        with open(os.path.join(out, "modules.json"), "w") as f:
            f.write(json.dumps(mods, indent=2) + "\n")
        os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
        modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                 "lasttoken"]
        pool = {"word_embedding_dimension": c["hidden_size"]}
        chosen = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens",
                  "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean": "weightedmean_tokens",
                  "lasttoken": "lasttoken"}[pooling]
        for m in modes:
            pool["pooling_mode_" + m] = (m == chosen)
        pool["include_prompt"] = True
        with open(os.path.join(out, "1_Pooling", "config.json"), "w") as f:
            f.write(json.dumps(pool, indent=4) + "\n")
        with open(os.path.join(out, "sentence_bert_config.json"), "w") as f:
            f.write(json.dumps({"max_seq_length": c["max_position_embeddings"], "do_lower_case": False},
                               indent=4) + "\n")
        with open(os.path.join(out, "config_sentence_transformers.json"), "w") as f:
            f.write(json.dumps({"__version__": {"sentence_transformers": "3.0.1", "transformers":
                                                TRANSFORMERS_VERSION, "pytorch": "2.3.1"},
                                "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
                               indent=2) + "\n")
    return c


def create_adapter(base_dir, out, targets, r, alpha, seed, rslora=False, layers=None, base_name=None,
                   dropout=0.05):
    base = load_model(base_dir)
    cfg = {
        "alpha_pattern": {}, "auto_mapping": None,
        "base_model_name_or_path": base_name or base_dir, "bias": "none",
        "eva_config": None, "exclude_modules": None,
        "fan_in_fan_out": bool(base.conv1d), "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": layers,
        "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False, "lora_dropout": dropout,
        "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": list(targets),
        "task_type": "FEATURE_EXTRACTION" if base.kind == "bert" else "CAUSAL_LM",
        "use_dora": False, "use_rslora": bool(rslora),
    }
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    rng = Rng(seed)
    tensors = {}
    mods = [p for p in base.lora_candidates() if peft_target_matches(cfg, p)]
    if not mods:
        raise ValueError("target_modules select nothing")
    for p in mods:
        wt = base.w[p + ".weight"]
        n_in, n_out = (wt.shape[0], wt.shape[1]) if base.conv1d else (wt.shape[1], wt.shape[0])
        # delta = scale * B @ A has entries of std ~0.3/sqrt(in): a clear but not dominant change
        A = rng.normal((r, n_in), 1.0 / math.sqrt(n_in))
        B = rng.normal((n_out, r), 0.3 / (scale * math.sqrt(r)))
        tensors[f"base_model.model.{p}.lora_A.weight"] = A
        tensors[f"base_model.model.{p}.lora_B.weight"] = B
    os.makedirs(out, exist_ok=True)
    _dump_json(os.path.join(out, "adapter_config.json"), cfg)
    st_save(os.path.join(out, "adapter_model.safetensors"), tensors, {"format": "pt"})
    return mods


def shard_checkpoint(src, out, shards):
    """Copies src to out with the weights split into `shards` files + model.safetensors.index.json,
    in the layout transformers writes (model-0000i-of-0000n.safetensors, name order)."""
    w, _ = st_load(os.path.join(src, "model.safetensors"))
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(src):
        if f not in ("model.safetensors",) and os.path.isfile(os.path.join(src, f)) and f != "reference.safetensors":
            shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    names = sorted(w)
    sizes = [w[n].numel() * w[n].element_size() for n in names]
    total = sum(sizes)
    target = total / shards
    groups, cur, acc = [], [], 0
    for n, s in zip(names, sizes):
        if cur and acc + s > target * (len(groups) + 1) and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
        cur.append(n)
        acc += s
    groups.append(cur)
    weight_map = {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        st_save(os.path.join(out, fname), {n: w[n] for n in g}, {"format": "pt"})
        for n in g:
            weight_map[n] = fname
    _dump_json(os.path.join(out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    return len(groups)


# --------------------------------------------------------------------------------------
# Reference fixtures
# --------------------------------------------------------------------------------------

T_FIX = 9
LEFT_PAD = 3
PAD_ID = 0
N_GREEDY = 8


def fixture_inputs(model, seed):
    """Row 0: T unpadded tokens. Row 1: LEFT_PAD pads (id 0) then T-LEFT_PAD tokens (decoders);
    BERT: row 0 a sentence pair, row 1 right-padded."""
    c = model.config
    V = c["vocab_size"]
    rng = Rng(seed)
    T = T_FIX
    if model.kind == "bert":
        ids = torch.zeros(2, T, dtype=torch.int64)
        mask = torch.ones(2, T, dtype=torch.int64)
        tt = torch.zeros(2, T, dtype=torch.int64)
        ids[0] = torch.tensor([101 % V] + rng.ints(5, V, T - 1))
        tt[0, 5:] = 1
        n1 = T - LEFT_PAD
        ids[1, :n1] = torch.tensor([101 % V] + rng.ints(5, V, n1 - 1))
        ids[1, n1:] = PAD_ID
        mask[1, n1:] = 0
        pos = torch.arange(T).unsqueeze(0).expand(2, T).clone()
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "position_ids": pos}
    special = {c.get("bos_token_id"), c.get("eos_token_id"), PAD_ID}
    lo = 3

    def body(n):
        out = []
        while len(out) < n:
            x = rng.ints(lo, V, 1)[0]
            if x not in special:
                out.append(x)
        return out

    bos = c.get("bos_token_id")
    first = [bos] if model.kind != "gpt2" and bos is not None else []
    ids = torch.zeros(2, T, dtype=torch.int64)
    mask = torch.ones(2, T, dtype=torch.int64)
    ids[0] = torch.tensor(first + body(T - len(first)))
    ids[1, :LEFT_PAD] = PAD_ID
    mask[1, :LEFT_PAD] = 0
    ids[1, LEFT_PAD:] = torch.tensor(first + body(T - LEFT_PAD - len(first)))
    return {"input_ids": ids, "attention_mask": mask, "position_ids": hf_position_ids(mask)}


def run_case(model, inputs):
    if model.kind == "bert":
        h, _ = model.forward(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                             inputs["position_ids"])
        return {"last_hidden_state": h, "sentence_embedding": model.sentence_embedding(h, inputs["attention_mask"])}
    return {"logits": model.forward(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])}


def _real(t, mask):
    """Values at real (mask 1) positions, flattened."""
    return t[mask.bool()]


def rel_err(a, b, mask=None):
    """(max |a-b| / max |b|, max |a-b|, max elementwise |a-b|/|b| over |b| >= 1% of max |b|),
    over real positions; b is the float64 run."""
    if mask is not None and a.dim() >= 2 and a.shape[:2] == mask.shape:
        a, b = _real(a, mask), _real(b, mask)
    a, b = a.double(), b.double()
    d = (a - b).abs()
    scale = b.abs().max()
    big = b.abs() >= 0.01 * scale
    return float(d.max() / scale), float(d.max()), float((d[big] / b.abs()[big]).max())


GREEDY_MIN_DISTINCT = 4
GREEDY_MIN_MARGIN = 0.05


def _greedy_checked(m64, m32, prompt, eos):
    g64, margins = greedy(m64, prompt, N_GREEDY)
    g32, _ = greedy(m32, prompt, N_GREEDY)
    ok = torch.equal(g64, g32) and eos not in g64.tolist() and min(margins) >= GREEDY_MIN_MARGIN
    return ok, g64, min(margins)


def make_reference(model_dir, adapters, seed, out=None, log=print, tries=500):
    """Writes <model_dir>/reference.safetensors. Stored floats are the float64 run rounded to
    float32; the float32 run is compared against it and the error reported.
    Decoders: the prompt seed is the first of seed, seed+1, ... whose greedy continuation
    (base and every adapter) never hits EOS, has a top1-top2 logit margin >= GREEDY_MIN_MARGIN
    at every step, agrees between fp32 and fp64, and (base) has >= GREEDY_MIN_DISTINCT tokens."""
    out = out or os.path.join(model_dir, "reference.safetensors")
    m64 = load_model(model_dir, torch.float64)
    m32 = load_model(model_dir, torch.float32)
    ads = [(name, load_model(model_dir, torch.float64).apply_lora(load_adapter(adir)),
            load_model(model_dir, torch.float32).apply_lora(load_adapter(adir))) for name, adir in adapters]
    eos = m64.config.get("eos_token_id")
    report = {}
    for attempt in range(tries if m64.kind != "bert" else 1):
        pseed = seed + attempt
        inputs = fixture_inputs(m64, pseed)
        if m64.kind == "bert":
            break
        prompt = inputs["input_ids"][0]
        ok, g, margin = _greedy_checked(m64, m32, prompt, eos)
        if not ok or len(set(g.tolist())) < GREEDY_MIN_DISTINCT:
            continue
        report["greedy_ids"] = (g, margin)
        for name, a64, a32 in ads:
            ok, ga, am = _greedy_checked(a64, a32, prompt, eos)
            if not ok:
                break
            report[f"greedy_ids_adapter_{name}"] = (ga, am)
        if ok:
            break
    else:
        raise ValueError(f"{model_dir}: no prompt seed in [{seed}, {seed + tries}) gives a clear greedy run")
    tensors = dict(inputs)
    mask = inputs["attention_mask"]
    r64, r32 = run_case(m64, inputs), run_case(m32, inputs)
    unused = set(m64.w) - m64.used
    if unused:
        raise ValueError(f"{model_dir}: checkpoint tensors never used: {sorted(unused)[:5]}")
    for k in r64:
        tensors[k] = r64[k].float()
        report[k] = rel_err(r32[k], r64[k], mask)
    for name, a64, a32 in ads:
        l64 = run_case(a64, inputs)["logits"]
        l32 = run_case(a32, inputs)["logits"]
        tensors[f"logits_adapter_{name}"] = l64.float()
        report[f"logits_adapter_{name}"] = rel_err(l32, l64, mask)
        diff = float((_real(l64, mask) - _real(r64["logits"], mask)).abs().max())
        if diff < 1e-2:
            raise ValueError(f"adapter {name} barely changes the logits ({diff})")
    for k, v in report.items():
        if k.startswith("greedy"):
            tensors[k] = v[0]
    st_save(out, tensors, {"format": "pt", "generator": "tools/model/reference.py", "prompt_seed": str(pseed)})
    log(f"  prompt seed {pseed}")
    for k, v in report.items():
        if k.startswith("greedy"):
            log(f"  {k}: {v[0].tolist()} (min top1-top2 logit margin {v[1]:.4f})")
        else:
            log(f"  {k}: fp32 vs fp64: max|d|/max|ref| {v[0]:.3e}, max|d| {v[1]:.3e}, "
                f"max elementwise rel (|ref|>=1% max) {v[2]:.3e}")
    return report


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------

def sensitivity(data, check):
    """How far plausible implementation mistakes move the stored fixtures (fp64, real positions).
    Each must be far above the parity tolerance for the fixtures to catch it."""
    def logits_of(name, cfg_over=None, w_over=None, adapter=None, scale_mul=None, inputs_over=None,
                  adapter_filter=None):
        d = os.path.join(data, name)
        cfg = dict(read_json(os.path.join(d, "config.json")), **(cfg_over or {}))
        kind = model_kind(cfg)
        w = _canonical_names(kind, load_weights(d))
        if w_over:
            w = w_over(cfg, w)
        m = {"gpt2": GPT2, "bert": Bert}.get(kind, LlamaFamily)(cfg, w, torch.float64)
        m.kind = kind
        if adapter:
            a = load_adapter(os.path.join(data, "adapters", adapter))
            if scale_mul:
                a.modules = {k: (A, B, s * scale_mul) for k, (A, B, s) in a.modules.items()}
            if adapter_filter:
                m.lora = {k: (A.double(), B.double(), s) for k, (A, B, s) in a.modules.items() if adapter_filter(k)}
            else:
                m.apply_lora(a)
        ref, _ = st_load(os.path.join(d, "reference.safetensors"))
        ref_mask = ref["attention_mask"]
        if inputs_over:
            ref = inputs_over(dict(ref))
        if kind == "bert":
            m.load_sentence_transformers(d)
            h, _ = m.forward(ref["input_ids"], ref["attention_mask"], ref["token_type_ids"], ref["position_ids"])
            out, key = h, "last_hidden_state"
        else:
            out = m.forward(ref["input_ids"], ref["attention_mask"], ref["position_ids"])
            key = "logits" if not adapter else f"logits_adapter_{adapter}"
        return rel_err(out, ref[key].double(), ref_mask)[0]

    def gqa_tiled(cfg, w):
        H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        D = cfg.get("head_dim") or cfg["hidden_size"] // H
        w = dict(w)
        for k in list(w):
            if k.endswith(("k_proj.weight", "v_proj.weight")):
                w[k] = w[k].view(KV, D, -1).repeat(H // KV, 1, 1).reshape(H * D, -1)
        cfg["num_key_value_heads"] = H
        return w

    def no_bias(cfg, w):
        return {k: v for k, v in w.items() if not k.endswith(".bias")}

    cases = [
        ("llama: rope_scaling ignored", lambda: logits_of("llama", {"rope_scaling": None})),
        ("llama: rope_theta 10000 instead of 500000", lambda: logits_of("llama", {"rope_theta": 10000.0})),
        ("llama: kv heads tiled (h % kv) instead of grouped (h // rep)", lambda: logits_of("llama", None, gqa_tiled)),
        ("llama: rms_norm_eps 1e-6 instead of 1e-5", lambda: logits_of("llama", {"rms_norm_eps": 1e-6})),
        ("llama-all-rslora: alpha/r instead of alpha/sqrt(r)",
         lambda: logits_of("llama", adapter="llama-all-rslora", scale_mul=math.sqrt(8) / 8)),
        ("qwen2: q/k/v biases dropped", lambda: logits_of("qwen2", None, no_bias)),
        ("gpt2: position_ids arange instead of cumsum(mask)-1 on the left-padded row",
         lambda: logits_of("gpt2", inputs_over=lambda r: dict(r, position_ids=torch.arange(9).expand(2, 9)))),
        ("mistral: attention_mask ignored (real tokens see the pads)",
         lambda: logits_of("mistral", inputs_over=lambda r: dict(r, attention_mask=None))),
        ("gpt2-attn: 'c_proj' applied to attn.c_proj only, not mlp.c_proj",
         lambda: logits_of("gpt2", adapter="gpt2-attn", adapter_filter=lambda k: not k.endswith("mlp.c_proj"))),
        ("gpt2: exact gelu instead of gelu_new", lambda: logits_of("gpt2", {"activation_function": "gelu"})),
        ("bert: tanh gelu instead of erf gelu", lambda: logits_of("bert", {"hidden_act": "gelu_new"})),
        ("bert: layer_norm_eps 1e-5 instead of 1e-12", lambda: logits_of("bert", {"layer_norm_eps": 1e-5})),
    ]
    for name, fn in cases:
        r = fn()
        check(f"sensitivity: {name}", r > 1e-4, f"moves the fixture by max rel {r:.2e}")


def selftest():
    import tempfile
    failures = []
    results = []

    def check(name, ok, detail=""):
        results.append((name, ok, detail))
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
        if not ok:
            failures.append(name)

    tmp = tempfile.mkdtemp(prefix="sy-ref-")
    try:
        # ---- safetensors round trip
        rng = Rng(7)
        t = {
            "f32": rng.normal((3, 5), 1.0), "f64": rng.normal((2, 2), 1.0).double(),
            "f16": rng.normal((7,), 1.0).half(), "bf16": rng.normal((4, 3), 1.0).bfloat16(),
            "i64": torch.tensor([[1, -2], [3, 2 ** 40]], dtype=torch.int64),
            "i32": torch.tensor([5, -6], dtype=torch.int32), "u8": torch.tensor([0, 255], dtype=torch.uint8),
            "i8": torch.tensor([-128, 127], dtype=torch.int8), "i16": torch.tensor([-3], dtype=torch.int16),
            "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(3.5),
            "empty": torch.zeros(0, 4), "a.b.c": torch.arange(6, dtype=torch.float32).view(2, 3),
        }
        p = os.path.join(tmp, "t.safetensors")
        st_save(p, t, {"format": "pt", "k": "v"})
        back, meta = st_load(p)
        ok = meta == {"format": "pt", "k": "v"} and set(back) == set(t) and all(
            back[k].dtype == t[k].dtype and back[k].shape == t[k].shape and torch.equal(back[k], t[k]) for k in t)
        n, hdr = st_read_header(p)
        ends = sorted((v["data_offsets"] for k, v in hdr.items() if k != "__metadata__"))
        contiguous = ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
        check("safetensors round trip (all dtypes, scalar, empty, metadata)", ok)
        check("safetensors header padded to 8, offsets contiguous", n % 8 == 0 and contiguous and
              os.path.getsize(p) == 8 + n + ends[-1][1])
        st_save(os.path.join(tmp, "t2.safetensors"), dict(reversed(list(t.items()))), {"format": "pt", "k": "v"})
        with open(p, "rb") as f1, open(os.path.join(tmp, "t2.safetensors"), "rb") as f2:
            check("safetensors writer deterministic (independent of dict order)", f1.read() == f2.read())

        # ---- tiny models
        dirs = {}
        llama3_rope = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 16, "rope_type": "llama3"}
        specs = {
            "gpt2": ("gpt2", {}),
            "llama": ("llama", {"num_hidden_layers": 3, "rope_theta": 500000.0, "rope_scaling": llama3_rope,
                                "tie_word_embeddings": True}),
            "mistral": ("mistral", {}),
            "qwen2": ("qwen2", {}),
            "bert": ("bert", {}),
        }
        for name, (arch, ov) in specs.items():
            dirs[name] = os.path.join(tmp, name)
            create_model(arch, dirs[name], seed=11, overrides=ov)

        g = Rng(3)
        seqA = g.ints(3, 250, 9)
        seqB = g.ints(3, 250, 6)
        T = 9
        for name in ("gpt2", "llama", "mistral", "qwen2"):
            m = load_model(dirs[name], torch.float64)
            # left padding
            idsL = torch.zeros(2, T, dtype=torch.int64)
            mL = torch.zeros(2, T, dtype=torch.int64)
            idsL[0] = torch.tensor(seqA)
            mL[0] = 1
            idsL[1, 3:] = torch.tensor(seqB)
            mL[1, 3:] = 1
            idsR = torch.zeros(2, T, dtype=torch.int64)
            mR = torch.zeros(2, T, dtype=torch.int64)
            idsR[0] = torch.tensor(seqA)
            mR[0] = 1
            idsR[1, :6] = torch.tensor(seqB)
            mR[1, :6] = 1
            idsL[1, :3] = 77  # pad ids must not matter
            lL = m.forward(idsL, mL, hf_position_ids(mL))
            lR = m.forward(idsR, mR, hf_position_ids(mR))
            solo = m.forward(torch.tensor([seqB]))
            e1 = float((lL[1, 3:] - lR[1, :6]).abs().max())
            e2 = float((lL[1, 3:] - solo[0]).abs().max())
            e3 = float((lL[0] - lR[0]).abs().max())
            check(f"{name}: left == right padding == unpadded at real positions (fp64)",
                  max(e1, e2, e3) < 1e-10, f"max diff {max(e1, e2, e3):.2e}")
            # position ids matter (guards against ignoring them); RoPE is relative, so a uniform
            # shift leaves rotary models unchanged while GPT-2's learned positions change
            shifted = m.forward(torch.tensor([seqB]), None, torch.arange(6).view(1, 6) + 5)
            stretched = m.forward(torch.tensor([seqB]), None, torch.arange(6).view(1, 6) * 2)
            ds = float((shifted - solo).abs().max())
            check(f"{name}: explicit position_ids change the output", float((stretched - solo).abs().max()) > 1e-3)
            if name == "gpt2":
                check(f"{name}: learned positions: shifting position_ids changes the output", ds > 1e-3)
            else:
                check(f"{name}: RoPE is relative: shifting all position_ids by 5 changes nothing", ds < 1e-10,
                      f"max diff {ds:.2e}")
            # fp32 vs fp64
            m32 = load_model(dirs[name], torch.float32)
            l32 = m32.forward(idsL, mL, hf_position_ids(mL))
            rel = rel_err(l32, lL, mL)[0]
            check(f"{name}: fp32 vs fp64 logits", rel < 1e-5, f"max rel err {rel:.2e}")
            # causal: future tokens do not change earlier logits
            alt = list(seqA)
            alt[-1] = (alt[-1] + 1) % 250 + 3
            la = m.forward(torch.tensor([alt]))
            lb = m.forward(torch.tensor([seqA]))
            check(f"{name}: causal (changing the last token leaves earlier logits)",
                  float((la[0, :-1] - lb[0, :-1]).abs().max()) < 1e-12 and float((la[0, -1] - lb[0, -1]).abs().max()) > 1e-6)

        # ---- LoRA: merge == unmerged, B = 0 -> base, layer filtering, conv1d
        adapters = {
            "llama-qv": ("llama", ["q_proj", "v_proj"], 4, 8, False, None),
            "llama-all-rslora": ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"], 8, 16, True, [1]),
            "gpt2-attn": ("gpt2", ["c_attn", "c_proj"], 4, 8, False, None),
            "qwen2-qv": ("qwen2", ["q_proj", "v_proj"], 4, 8, False, None),
            "mistral-o": ("mistral", ["o_proj", "down_proj"], 2, 4, False, [0]),
            "bert-qv": ("bert", ["query", "value"], 4, 8, False, None),
        }
        x = torch.tensor([seqA])
        for an, (base, tg, r, alpha, rs, layers) in adapters.items():
            ad = os.path.join(tmp, "ad-" + an)
            mods = create_adapter(dirs[base], ad, tg, r, alpha, seed=5, rslora=rs, layers=layers)
            A = load_adapter(ad)
            if base == "bert":
                fw = lambda mm: mm.forward(x)[0]
            else:
                fw = lambda mm: mm.forward(x)
            base_out = fw(load_model(dirs[base], torch.float64))
            un = fw(load_model(dirs[base], torch.float64).apply_lora(A))
            me = fw(load_model(dirs[base], torch.float64).apply_lora(A, merge=True))
            d = float((un - me).abs().max())
            check(f"adapter {an}: merged == unmerged (fp64)", d < 1e-10, f"max diff {d:.2e}, {len(mods)} modules")
            check(f"adapter {an}: changes the output", float((un - base_out).abs().max()) > 1e-2)
            zero = LoraAdapter(A.config, {k: (a, torch.zeros_like(b), s) for k, (a, b, s) in A.modules.items()})
            z = fw(load_model(dirs[base], torch.float64).apply_lora(zero))
            check(f"adapter {an}: lora_B = 0 gives the base output", float((z - base_out).abs().max()) == 0.0)
            want_scale = alpha / math.sqrt(r) if rs else alpha / r
            check(f"adapter {an}: scale {want_scale:.4f}", all(abs(s - want_scale) < 1e-12 for _, _, s in A.modules.values()))
        got = sorted(load_adapter(os.path.join(tmp, "ad-llama-all-rslora")).modules)
        check("layers_to_transform [1] selects only layer 1", all(".layers.1." in k for k in got) and len(got) == 7,
              f"{len(got)} modules")
        got = sorted(load_adapter(os.path.join(tmp, "ad-gpt2-attn")).modules)
        check("gpt2 'c_proj' target matches attn.c_proj and mlp.c_proj (suffix match)",
              sum(k.endswith("mlp.c_proj") for k in got) == 2 and sum(k.endswith("attn.c_proj") for k in got) == 2)
        cfg = read_json(os.path.join(tmp, "ad-gpt2-attn", "adapter_config.json"))
        check("gpt2 adapter fan_in_fan_out true", cfg["fan_in_fan_out"] is True)
        # PEFT matching rules
        c1 = {"target_modules": ["q_proj"], "layers_to_transform": 2}
        c2 = {"target_modules": r".*layers\.[01]\.self_attn\.(q|v)_proj"}
        c3 = {"target_modules": ["q_proj"], "layers_to_transform": [0], "layers_pattern": "layers"}
        check("PEFT matching: int layers_to_transform, regex string, layers_pattern",
              peft_target_matches(c1, "model.layers.2.self_attn.q_proj")
              and not peft_target_matches(c1, "model.layers.1.self_attn.q_proj")
              and peft_target_matches(c2, "model.layers.1.self_attn.v_proj")
              and not peft_target_matches(c2, "model.layers.2.self_attn.v_proj")
              and not peft_target_matches(c2, "model.layers.1.self_attn.k_proj")
              and peft_target_matches(c3, "model.layers.0.self_attn.q_proj")
              and not peft_target_matches({"target_modules": ["proj"]}, "model.layers.0.self_attn.q_proj"))

        # ---- GQA repeat_kv == the equivalent MHA checkpoint with duplicated k/v heads
        cfg = read_json(os.path.join(dirs["mistral"], "config.json"))
        w = load_weights(dirs["mistral"])
        H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        w2 = dict(w)
        for l in range(cfg["num_hidden_layers"]):
            for n in ("k_proj", "v_proj"):
                k = f"model.layers.{l}.self_attn.{n}.weight"
                w2[k] = w[k].view(KV, D, -1).repeat_interleave(H // KV, dim=0).reshape(H * D, -1)
        cfg2 = dict(cfg, num_key_value_heads=H)
        a = LlamaFamily(cfg, w, torch.float64).forward(x)
        b = LlamaFamily(cfg2, w2, torch.float64).forward(x)
        check("GQA == MHA with each kv head repeated for its query group", float((a - b).abs().max()) < 1e-10)

        # ---- RoPE variants
        cfg = read_json(os.path.join(dirs["mistral"], "config.json"))
        w = load_weights(dirs["mistral"])
        pos = torch.arange(9).view(1, 9)
        base = LlamaFamily(dict(cfg), w, torch.float64).forward(x, None, pos)
        lin = LlamaFamily(dict(cfg, rope_scaling={"type": "linear", "factor": 2.0}), w, torch.float64).forward(
            x, None, pos * 2)
        check("rope linear factor 2 at positions 2p == default at p", float((lin - base).abs().max()) < 1e-10)
        l3 = dict(cfg, rope_scaling=dict(llama3_rope, factor=1.0))
        l3o = LlamaFamily(l3, w, torch.float64).forward(x, None, pos)
        check("rope llama3 with factor 1 == default", float((l3o - base).abs().max()) < 1e-10)
        inv0 = rope_inv_freq(dict(cfg, rope_theta=500000.0), 16, torch.float64)
        inv3 = rope_inv_freq(dict(cfg, rope_theta=500000.0, rope_scaling=llama3_rope), 16, torch.float64)
        ratio = (inv0 / inv3).tolist()
        check("rope llama3 (orig 16): freq 0 smoothed, others divided by 8",
              1.0 < ratio[0] < 8.0 and all(abs(r_ - 8.0) < 1e-12 for r_ in ratio[1:]),
              "ratios " + ", ".join(f"{r_:.3f}" for r_ in ratio))
        l3real = LlamaFamily(dict(cfg, rope_scaling=llama3_rope), w, torch.float64).forward(x, None, pos)
        check("rope llama3 (factor 8) changes logits", float((l3real - base).abs().max()) > 1e-3)

        # ---- tied == untied with lm_head = embed copy; qwen2 with zero biases == llama layout
        cfg = read_json(os.path.join(dirs["llama"], "config.json"))
        w = load_weights(dirs["llama"])
        a = LlamaFamily(cfg, w, torch.float64).forward(x)
        w2 = dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"].clone()})
        b = LlamaFamily(dict(cfg, tie_word_embeddings=False), w2, torch.float64).forward(x)
        check("tied embeddings == untied with lm_head copied", float((a - b).abs().max()) < 1e-12)
        cfg = read_json(os.path.join(dirs["qwen2"], "config.json"))
        w = load_weights(dirs["qwen2"])
        wz = {k: (torch.zeros_like(v) if k.endswith(".bias") else v) for k, v in w.items()}
        a = LlamaFamily(cfg, wz, torch.float64).forward(x)
        lcfg = dict(cfg, model_type="llama", architectures=["LlamaForCausalLM"])
        b = LlamaFamily(lcfg, {k: v for k, v in w.items() if not k.endswith(".bias")}, torch.float64).forward(x)
        check("qwen2 with zero q/k/v biases == llama", float((a - b).abs().max()) < 1e-12)
        b2 = LlamaFamily(cfg, w, torch.float64).forward(x)
        check("qwen2 biases matter", float((a - b2).abs().max()) > 1e-3)

        # ---- sharded == single file
        sd = os.path.join(tmp, "llama-sharded")
        n = shard_checkpoint(dirs["llama"], sd, 3)
        a = load_model(dirs["llama"], torch.float64).forward(x)
        b = load_model(sd, torch.float64).forward(x)
        check(f"sharded ({n} shards) == single file", torch.equal(a, b))

        # ---- BERT: padding invariance, pooling, normalize, legacy names
        m = load_model(dirs["bert"], torch.float64)
        ids = torch.zeros(2, 9, dtype=torch.int64)
        mask = torch.zeros(2, 9, dtype=torch.int64)
        ids[0] = torch.tensor(seqA)
        mask[0] = 1
        ids[1, :6] = torch.tensor(seqB)
        mask[1, :6] = 1
        ids[1, 6:] = 99
        h, pooled = m.forward(ids, mask)
        hs, _ = m.forward(torch.tensor([seqB]))
        check("bert: right padding == unpadded at real positions", float((h[1, :6] - hs[0]).abs().max()) < 1e-10)
        e = m.sentence_embedding(h, mask)
        es = m.sentence_embedding(hs, torch.ones(1, 6, dtype=torch.int64))
        check("bert: mean pooling ignores padding", float((e[1] - es[0]).abs().max()) < 1e-10)
        check("bert: Normalize gives unit norm", float((e.norm(dim=1) - 1).abs().max()) < 1e-12)
        manual = (h[1, :6].mean(0))
        manual = manual / manual.norm()
        check("bert: embedding == normalized mean of real tokens", float((manual - e[1]).abs().max()) < 1e-12)
        # left padding with explicit position ids also matches
        idsL = torch.zeros(1, 9, dtype=torch.int64)
        idsL[0, 3:] = torch.tensor(seqB)
        mL = torch.zeros(1, 9, dtype=torch.int64)
        mL[0, 3:] = 1
        hl, _ = m.forward(idsL, mL, None, hf_position_ids(mL).clamp(min=0))
        check("bert: left padding with explicit position ids == unpadded", float((hl[0, 3:] - hs[0]).abs().max()) < 1e-10)
        # legacy layout: bert. prefix + embeddings.position_ids buffer
        wl = {"bert." + k: v for k, v in load_weights(dirs["bert"]).items()}
        wl["bert.embeddings.position_ids"] = torch.arange(64).view(1, -1)
        ld = os.path.join(tmp, "bert-legacy")
        os.makedirs(ld)
        shutil.copyfile(os.path.join(dirs["bert"], "config.json"), os.path.join(ld, "config.json"))
        st_save(os.path.join(ld, "model.safetensors"), wl, {"format": "pt"})
        hl2, _ = load_model(ld, torch.float64).forward(ids, mask)
        check("bert: 'bert.' prefix and position_ids buffer tolerated", torch.equal(hl2, h))
        # every parameter used
        for name in dirs:
            mm = load_model(dirs[name], torch.float64)
            if name == "bert":
                mm.forward(ids, mask)
            else:
                mm.forward(x)
            unused = set(mm.w) - mm.used
            check(f"{name}: every checkpoint tensor is used", not unused, str(sorted(unused)[:3]))
        # pooling variants
        hh = torch.randn(2, 4, 3, dtype=torch.float64)
        mk = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        m.normalize = False
        m.pooling = {"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True,
                     "pooling_mode_lasttoken": True}
        e = m.sentence_embedding(hh, mk)
        ok = (torch.equal(e[:, :3], hh[:, 0]) and torch.equal(e[1, 3:6], hh[1, :2].max(0).values)
              and torch.equal(e[1, 6:], hh[1, 1]) and torch.equal(e[0, 6:], hh[0, 3]))
        check("pooling cls+max+lasttoken concatenated in sentence-transformers order", ok)

        # ---- second formulations of the primitives
        # RoPE: Meta's original complex form on interleaved pairs == HF rotate_half on the
        # layout HF's conversion script produces (rows permuted per head: 2i -> i, 2i+1 -> i+D/2)
        D = 16
        q = torch.randn(2, 3, 5, D, dtype=torch.float64)
        pos = torch.tensor([[0, 1, 2, 3, 4], [1, 1, 0, 1, 2]])
        mm = LlamaFamily.__new__(LlamaFamily)
        mm.dtype = torch.float64
        mm.attention_scaling = 1.0
        mm.inv_freq = rope_inv_freq({"rope_theta": 500000.0, "rope_scaling": llama3_rope}, D, torch.float64)
        cos, sin = mm.rope(pos)
        hf = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
        meta_in = torch.stack((q[..., :D // 2], q[..., D // 2:]), dim=-1)      # [.., D/2, 2] interleaved
        zc = torch.view_as_complex(meta_in.contiguous())
        ang = pos.to(torch.float64).unsqueeze(-1) * mm.inv_freq
        rot = torch.view_as_real(zc * torch.polar(torch.ones_like(ang), ang).unsqueeze(1))
        back = torch.cat((rot[..., 0], rot[..., 1]), dim=-1)
        check("RoPE rotate_half == Meta complex rotation on permuted layout", float((hf - back).abs().max()) < 1e-12)

        # llama3 scaling: per-frequency scalar rewrite of Meta's apply_scaling
        def meta_scaling(freqs, f, lo, hi, old):
            outl = []
            for fr in freqs:
                wl = 2 * math.pi / fr
                if wl < old / hi:
                    outl.append(fr)
                elif wl > old / lo:
                    outl.append(fr / f)
                else:
                    sm = (old / wl - lo) / (hi - lo)
                    outl.append((1 - sm) * fr / f + sm * fr)
            return outl
        for theta, old in ((500000.0, 16), (500000.0, 8192), (10000.0, 64)):
            plain = rope_inv_freq({"rope_theta": theta}, 128, torch.float64).tolist()
            ours = rope_inv_freq({"rope_theta": theta, "rope_scaling": dict(llama3_rope, factor=32.0,
                                  original_max_position_embeddings=old)}, 128, torch.float64).tolist()
            want = meta_scaling(plain, 32.0, 1.0, 4.0, old)
            check(f"llama3 scaling == scalar rewrite (theta {theta:g}, original {old})",
                  max(abs(a_ - b_) for a_, b_ in zip(ours, want)) < 1e-15)
        xg = torch.linspace(-6, 6, 1001, dtype=torch.float64)
        check("gelu_new == torch gelu(approximate='tanh'); gelu == torch erf gelu",
              float((act_fn("gelu_new")(xg) - torch.nn.functional.gelu(xg, approximate="tanh")).abs().max()) < 1e-14
              and float((act_fn("gelu")(xg) - torch.nn.functional.gelu(xg)).abs().max()) < 1e-14)
        xr = torch.randn(3, 64, dtype=torch.float64)
        wr = torch.randn(64, dtype=torch.float64)
        manual = wr * xr / torch.sqrt((xr * xr).mean(-1, keepdim=True) + 1e-5)
        check("RMSNorm == w * x / sqrt(mean(x^2) + eps)", float((rms_norm(xr, wr, 1e-5) - manual).abs().max()) < 1e-13)

        # ---- fixtures on disk, if present, still reproduce
        data = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "tests", "data", "model")
        for name in sorted(os.listdir(data)) if os.path.isdir(data) else []:
            refp = os.path.join(data, name, "reference.safetensors")
            if not os.path.isfile(refp):
                continue
            ref, _ = st_load(refp)
            mm = load_model(os.path.join(data, name), torch.float64)
            inputs = {k: ref[k] for k in ("input_ids", "attention_mask", "position_ids", "token_type_ids") if k in ref}
            outp = run_case(mm, inputs)
            worst = max(rel_err(outp[k].float(), ref[k].double(), inputs["attention_mask"])[0] for k in outp)
            if "greedy_ids" in ref:
                g, _ = greedy(mm, ref["input_ids"][0], N_GREEDY)
                check(f"fixture {name}: greedy_ids reproduce", torch.equal(g, ref["greedy_ids"]))
            for k in ref:
                if k.startswith("logits_adapter_"):
                    an = k[len("logits_adapter_"):]
                    ma = load_model(os.path.join(data, name), torch.float64).apply_lora(
                        load_adapter(os.path.join(data, "adapters", an)))
                    la = run_case(ma, inputs)["logits"]
                    worst = max(worst, rel_err(la.float(), ref[k].double(), inputs["attention_mask"])[0])
            check(f"fixture {name}/reference.safetensors reproduces", worst < 1e-6, f"max rel err {worst:.2e}")
        if os.path.isfile(os.path.join(data, "llama", "reference.safetensors")):
            sensitivity(data, check)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(results) - len(failures)}/{len(results)} checks passed")
    return 1 if failures else 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def _parse_set(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out[k] = json.loads(v)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("selftest")
    p = sub.add_parser("create-model")
    p.add_argument("arch", choices=["gpt2", "llama", "mistral", "qwen2", "bert"])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", help="config override KEY=JSON")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--legacy-position-ids", action="store_true",
                   help="BERT: also store embeddings.position_ids (I64) as older transformers did")
    p = sub.add_parser("create-adapter")
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--targets", required=True)
    p.add_argument("--r", type=int, required=True)
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--rslora", action="store_true")
    p.add_argument("--layers", default=None, help="comma-separated layers_to_transform")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-name", default=None, help="base_model_name_or_path to record")
    p = sub.add_parser("shard")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--shards", type=int, default=2)
    p = sub.add_parser("make-reference")
    p.add_argument("model")
    p.add_argument("--adapter", action="append", default=[], help="NAME=DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p = sub.add_parser("forward")
    p.add_argument("model")
    p.add_argument("--ids", required=True, help="rows separated by '/', ids by ','; shorter rows are left-padded")
    p.add_argument("--right-pad", action="store_true")
    p.add_argument("--adapter", default=None)
    p.add_argument("--merge", action="store_true")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default=None, help="write inputs, logits/hidden states and per-layer hidden states")
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("dump")
    p.add_argument("file")
    args = ap.parse_args(argv)

    if args.cmd == "selftest":
        return selftest()
    if args.cmd == "create-model":
        create_model(args.arch, args.out, args.seed, _parse_set(args.set), args.pooling, not args.no_normalize,
                     args.legacy_position_ids)
        return 0
    if args.cmd == "create-adapter":
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        alpha = int(args.alpha) if float(args.alpha).is_integer() else args.alpha
        mods = create_adapter(args.base, args.out, args.targets.split(","), args.r, alpha, args.seed,
                              args.rslora, layers, args.base_name)
        print(f"{args.out}: {len(mods)} modules")
        return 0
    if args.cmd == "shard":
        n = shard_checkpoint(args.src, args.out, args.shards)
        print(f"{args.out}: {n} shards")
        return 0
    if args.cmd == "make-reference":
        ads = [tuple(a.split("=", 1)) for a in args.adapter]
        print(args.model)
        make_reference(args.model, ads, args.seed, args.out)
        return 0
    if args.cmd == "forward":
        dtype = torch.float64 if args.dtype == "float64" else torch.float32
        m = load_model(args.model, dtype)
        if args.adapter:
            m.apply_lora(load_adapter(args.adapter), merge=args.merge)
        rows = [[int(v) for v in r.split(",") if v.strip()] for r in args.ids.split("/")]
        T = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), T, dtype=torch.int64)
        mask = torch.zeros(len(rows), T, dtype=torch.int64)
        for i, r in enumerate(rows):
            sl = slice(0, len(r)) if args.right_pad else slice(T - len(r), T)
            ids[i, sl] = torch.tensor(r)
            mask[i, sl] = 1
        cap = {}
        out = {"input_ids": ids, "attention_mask": mask}
        if m.kind == "bert":
            h, pooled = m.forward(ids, mask, capture=cap)
            out.update(last_hidden_state=h, sentence_embedding=m.sentence_embedding(h, mask))
            if pooled is not None:
                out["pooler_output"] = pooled
            print(json.dumps({"sentence_embedding_first8": [[round(float(v), 6) for v in row[:8]]
                                                            for row in out["sentence_embedding"]]}))
        else:
            pos = hf_position_ids(mask)
            logits = m.forward(ids, mask, pos, capture=cap)
            out.update(position_ids=pos, logits=logits)
            print(json.dumps({"argmax_last": logits[:, -1].argmax(-1).tolist() if not args.right_pad else None,
                              "logits_last_first8": [[round(float(v), 6) for v in row[:8]] for row in logits[:, -1]]}))
        if args.out:
            out.update(cap)
            st_save(args.out, {k: (v.float() if v.is_floating_point() else v) for k, v in out.items()},
                    {"format": "pt"})
        return 0
    if args.cmd == "compare":
        a, _ = st_load(args.a)
        b, _ = st_load(args.b)
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                print(f"{k}: only in {'A' if k in a else 'B'}")
                continue
            if a[k].shape != b[k].shape:
                print(f"{k}: shape {list(a[k].shape)} vs {list(b[k].shape)}")
                continue
            d = (a[k].double() - b[k].double()).abs()
            scale = float(b[k].double().abs().max()) if b[k].numel() else 0.0
            line = f"{k}: max abs diff {float(d.max()) if d.numel() else 0.0:.3e}, max |B| {scale:.3e}"
            mask = b.get("attention_mask")
            if mask is not None and d.dim() >= 2 and tuple(d.shape[:2]) == tuple(mask.shape) and k != "attention_mask":
                real = d[mask.bool()]
                line += f"; at real positions: max abs diff {float(real.max()):.3e}" \
                        f" (rel {float(real.max()) / max(scale, 1e-30):.3e})"
            print(line)
        return 0
    if args.cmd == "dump":
        n, hdr = st_read_header(args.file)
        print(f"header {n} bytes; __metadata__ {hdr.get('__metadata__')}")
        for k, v in hdr.items():
            if k != "__metadata__":
                print(f"{k}\t{v['dtype']}\t{v['shape']}\t{v['data_offsets']}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
