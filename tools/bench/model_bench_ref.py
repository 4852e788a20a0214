#!/usr/bin/python3
"""Reference benchmark: a Llama decoder in plain PyTorch eager mode.

This is the yardstick for Switchyard's C++ (LibTorch) model code. It writes the
model the way Hugging Face's modeling_llama.py runs it with the "eager"
attention implementation, and LoRA the way PEFT's lora.Linear does, so the
numbers are what a user would get from transformers + peft on the same
LibTorch, minus Python-side framework overhead that those libraries add.

  * LlamaRMSNorm computes in float32 and casts back before the weight multiply.
  * Rotary embedding: cos/sin from position ids (inv_freq kept in float32,
    cos/sin cast to the activation dtype), rotate_half.
  * repeat_kv for grouped-query attention.
  * Attention: matmul, scale, additive causal mask (dtype min), softmax in
    float32 cast back to the activation dtype, matmul.
  * LlamaMLP: down(silu(gate(x)) * up(x)).
  * Loss: logits upcast to float32, shifted, CrossEntropy (mean, ignore -100).
  * LoRA: result = base(x) + lora_B(lora_A(dropout(x))) * (alpha / r);
    lora_A kaiming-uniform(a=sqrt(5)), lora_B zeros; only LoRA parameters
    require grad. Dropout 0 is nn.Identity, as in PEFT.
  * Decode: greedy, KV cache that concatenates new k/v each step (DynamicCache),
    under torch.inference_mode(); logits only for the last position.

Usage (defaults shown):
  tools/bench/model_bench_ref.py --layers 12 --hidden 768 --heads 12 \
      --kv-heads 12 --intermediate 2048 --vocab 32000 --seq 512 --batch 4 \
      --steps 3 --warmup 1 --threads $(nproc) \
      --modes full-fp32,full-bf16,lora-fp32,lora-bf16 --lora-r 16 \
      --decode-tokens 64 --decode-streams 1,8 [--json]

Must run under /usr/bin/python3 (Debian's python3-torch 1.13).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMPL = "pytorch-eager"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------
# Model (modeling_llama.py, eager path)
# ----------------------------------------------------------------------------

class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, head_dim, base=10000.0):
        super().__init__()
        # A plain attribute, not a buffer, so model.to(bf16) leaves it float32
        # (HF recomputes/keeps it in float32 too).
        self.inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded @ position_ids_expanded).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class DynamicCache:
    """HF DynamicCache: per-layer k/v, grown by concatenation."""

    def __init__(self):
        self.key_cache = []
        self.value_cache = []

    def get_seq_length(self):
        return self.key_cache[0].shape[-2] if self.key_cache else 0

    def update(self, key_states, value_states, layer_idx):
        if len(self.key_cache) <= layer_idx:
            self.key_cache.append(key_states)
            self.value_cache.append(value_states)
        else:
            self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx], key_states], dim=-2)
            self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx], value_states], dim=-2)
        return self.key_cache[layer_idx], self.value_cache[layer_idx]


class LlamaAttention(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = cfg.heads
        self.num_key_value_heads = cfg.kv_heads
        self.head_dim = cfg.hidden // cfg.heads
        self.num_key_value_groups = cfg.heads // cfg.kv_heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * self.head_dim, cfg.hidden, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if past_key_value is not None:
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx)

        # eager_attention_forward
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, layer_idx)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_eps)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, past_key_value)
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


def causal_mask_4d(batch, q_len, past_len, dtype, device):
    """HF _prepare_4d_causal_attention_mask_with_cache_position without padding."""
    target_length = past_len + q_len
    cache_position = torch.arange(past_len, past_len + q_len, device=device)
    min_dtype = torch.finfo(dtype).min
    mask = torch.full((q_len, target_length), fill_value=min_dtype, dtype=dtype, device=device)
    if q_len != 1:
        mask = torch.triu(mask, diagonal=1)
    mask *= torch.arange(target_length, device=device) > cache_position.reshape(-1, 1)
    return mask[None, None, :, :].expand(batch, 1, -1, -1)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, i) for i in range(cfg.layers)])
        self.norm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_eps)
        self.rotary_emb = LlamaRotaryEmbedding(cfg.hidden // cfg.heads, base=cfg.rope_theta)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.apply(self._init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @staticmethod
    def _init_weights(module, std=0.02):  # HF LlamaPreTrainedModel._init_weights
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)

    def forward(self, input_ids, labels=None, past_key_values=None, logits_to_keep=0):
        batch, q_len = input_ids.shape
        inputs_embeds = self.embed_tokens(input_ids)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        position_ids = torch.arange(past_len, past_len + q_len, device=input_ids.device).unsqueeze(0)
        position_ids = position_ids.expand(batch, -1)
        attention_mask = causal_mask_4d(batch, q_len, past_len, inputs_embeds.dtype, input_ids.device)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, position_embeddings, attention_mask, past_key_values)
        hidden_states = self.norm(hidden_states)

        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)
        if labels is None:
            return logits
        # ForCausalLMLoss: upcast, shift, cross entropy (mean over non-ignored).
        logits = logits.float()
        shift_logits = logits[..., :-1, :].contiguous().view(-1, self.cfg.vocab)
        shift_labels = labels[..., 1:].contiguous().view(-1)
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="mean")


# ----------------------------------------------------------------------------
# LoRA (peft.tuners.lora.layer.Linear)
# ----------------------------------------------------------------------------

class LoraLinear(nn.Module):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__()
        self.base_layer = base_layer
        self.lora_dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        self.scaling = lora_alpha / r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        # _move_adapter_to_device_of_base_layer: adapter takes the base dtype.
        self.lora_A.to(base_layer.weight.dtype)
        self.lora_B.to(base_layer.weight.dtype)

    def forward(self, x):
        result = self.base_layer(x)
        torch_result_dtype = result.dtype
        x = x.to(self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return result.to(torch_result_dtype)


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model, r, alpha, dropout, targets=LORA_TARGETS):
    for p in model.parameters():
        p.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoraLinear(child, r, alpha, dropout))
    return model


# ----------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------

def count_params(model):
    total = sum(p.numel() for p in model.parameters())  # shared (tied) ones once
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def build_model(args, dtype, lora):
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(args)
    if lora:
        apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout)
    return model.to(dtype)


def bench_train(args, mode):
    kind, dname = mode.split("-")
    dtype = DTYPES[dname]
    model = build_model(args, dtype, lora=(kind == "lora"))
    model.train()
    total, trainable = count_params(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    labels = ids.clone()

    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = model(ids, labels)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    step_s = statistics.median(times[args.warmup:])
    result = {
        "impl": IMPL, "mode": mode,
        "tokens_per_s": args.batch * args.seq / step_s,
        "step_s": step_s, "params": total, "trainable": trainable,
        "first_loss": losses[0], "last_loss": losses[-1],
        "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
    }
    del model, optimizer
    return result


@torch.inference_mode()
def greedy_decode(model, prompt, new_tokens):
    """Prefill the prompt (untimed), then `new_tokens` timed one-token steps."""
    cache = DynamicCache()
    logits = model(prompt, past_key_values=cache, logits_to_keep=1)
    next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        logits = model(next_tok, past_key_values=cache)
        next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)
    return time.perf_counter() - t0


def bench_decode(args, dname, models):
    dtype = DTYPES[dname]
    if dname not in models:
        models.clear()
        models[dname] = build_model(args, dtype, lora=False).eval()
    model = models[dname]
    results = []
    for streams in args.decode_streams:
        gen = torch.Generator().manual_seed(args.seed + 2)
        prompt = torch.randint(0, args.vocab, (streams, args.prompt_len), generator=gen)
        greedy_decode(model, prompt, min(4, args.decode_tokens))  # warm-up
        secs = greedy_decode(model, prompt, args.decode_tokens)
        results.append({
            "impl": IMPL, "mode": "decode-" + dname, "streams": streams,
            "tokens_per_s": streams * args.decode_tokens / secs,
            "step_s": secs / args.decode_tokens,
            "prompt_len": args.prompt_len, "new_tokens": args.decode_tokens,
            "threads": torch.get_num_threads(),
        })
    return results


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rms-eps", type=float, default=1e-6)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--modes", default="full-fp32,full-bf16,lora-fp32,lora-bf16",
                   help="training modes; {full,lora}-{fp32,bf16}, comma-separated")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--decode-tokens", type=int, default=64, help="0 skips decode")
    p.add_argument("--decode-streams", default="1,8")
    p.add_argument("--decode-dtypes", default="fp32,bf16")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print one JSON object per result")
    args = p.parse_args(argv)
    if args.kv_heads is None:
        args.kv_heads = args.heads
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.modes:
        kind, _, dname = m.partition("-")
        if kind not in ("full", "lora") or dname not in DTYPES:
            p.error("bad mode %r" % m)
    args.decode_streams = [int(s) for s in args.decode_streams.split(",") if s]
    args.decode_dtypes = [d for d in args.decode_dtypes.split(",") if d]
    for d in args.decode_dtypes:
        if d not in DTYPES:
            p.error("bad decode dtype %r" % d)
    if args.hidden % args.heads or args.heads % args.kv_heads:
        p.error("hidden must divide by heads, heads by kv-heads")
    return args


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    def emit(r):
        if args.json:
            print(json.dumps(r), flush=True)

    print("# %s: torch %s, %d threads, layers=%d hidden=%d heads=%d kv_heads=%d "
          "intermediate=%d vocab=%d tied=%s seq=%d batch=%d steps=%d warmup=%d lora_r=%d "
          "lora_alpha=%g; ln(vocab)=%.4f"
          % (IMPL, torch.__version__, torch.get_num_threads(), args.layers, args.hidden,
             args.heads, args.kv_heads, args.intermediate, args.vocab, args.tie_embeddings,
             args.seq, args.batch, args.steps, args.warmup, args.lora_r, args.lora_alpha,
             math.log(args.vocab)), file=sys.stderr, flush=True)

    train_results = []
    for mode in args.modes:
        r = bench_train(args, mode)
        train_results.append(r)
        emit(r)

    decode_results = []
    if args.decode_tokens > 0:
        models = {}
        for dname in args.decode_dtypes:
            for r in bench_decode(args, dname, models):
                decode_results.append(r)
                emit(r)
        models.clear()

    out = sys.stderr if args.json else sys.stdout
    if train_results:
        print("\n%-10s %10s %12s %13s %12s %11s" % (
            "mode", "step_s", "tokens/s", "params", "trainable", "first_loss"), file=out)
        for r in train_results:
            print("%-10s %10.3f %12.1f %13d %12d %11.4f" % (
                r["mode"], r["step_s"], r["tokens_per_s"], r["params"], r["trainable"],
                r["first_loss"]), file=out)
    if decode_results:
        print("\n%-12s %8s %12s %12s" % ("mode", "streams", "tokens/s", "ms/token-step"), file=out)
        for r in decode_results:
            print("%-12s %8d %12.1f %12.2f" % (
                r["mode"], r["streams"], r["tokens_per_s"], 1000 * r["step_s"]), file=out)
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
