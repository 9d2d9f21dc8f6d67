"""The GPT language model, in one file, with GPT-2's own parameter names.

By default (arch='gpt2') it is GPT-2: pre-LayerNorm transformer blocks, fused QKV projection,
GELU MLP (4x), learned position embeddings, weight tying between the token embedding and the
output head, GPT-2's init (residual projections scaled by 1/sqrt(2 * n_layer)). Attention runs
through F.scaled_dot_product_attention, which picks a flash / memory-efficient kernel on CUDA.
Nothing here knows about devices, parallelism or compile: that is the caller's business.

arch='modern' (a preset for training from scratch) swaps in what the modded-nanogpt speedrun
found on models of this size to reach the same loss in several times fewer steps; each change,
and why:
- rotary position embeddings (RoPE) on q and k instead of learned positions: attention sees
  relative offsets, which generalize better and cost no parameters;
- RMSNorm instead of LayerNorm: no mean subtraction or bias, as good and a little cheaper;
- QK-norm (RMSNorm of each head's q and k): bounds the attention logits, so larger learning
  rates stay stable;
- ReLU² in the MLP instead of GELU: sparser activations that learn faster at this size;
- untied input and output embeddings: reading a token and predicting one are different jobs;
- zero-initialized output projections (attention, MLP, head): every block starts as the
  identity and the first logits are uniform, so early steps are not spent undoing the init;
- logit soft-capping (LOGIT_SOFTCAP * tanh(logits / LOGIT_SOFTCAP)): no runaway logits.
They come as one preset because they were measured together (experiments/modern_vs_gpt2.py).

Generation keeps a KV cache: the prompt is run once (prefill) and each new token then costs
one position's forward, attending to the cached keys and values. GPT-2's positions are learned and
absolute, so once the sequence outgrows block_size every cached key is stale (each token's
position shifts when the window slides): from then on each step recomputes the last block_size
tokens, exactly as the cache-less path does (sliding recompute), and the two give the same
tokens. RoPE models slide the same way, so that a window is always seen at the positions
0..block_size-1 it was trained on.
"""

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from configurator import ConfigError, check_bounds, option

ARCHS = ("gpt2", "modern")
ACTIVATIONS = ("gelu_tanh", "gelu")  # arch='gpt2''s MLP: GELU's tanh approximation (OpenAI's GPT-2, 'gelu_new'), or exact GELU (nanoGPT's)
LOGIT_SOFTCAP = 15.0  # arch='modern': logits stay within +-15
ROPE_BASE = 10000.0  # arch='modern': the rotary frequencies' base, as in RoFormer and Llama


@dataclass
class GPTConfig:
    """The model's shape: the one place it is declared. A training run's --n_layer etc. are these
    fields (configurator.part); checkpoints record them as model_args."""

    # model (GPT-2's weights and checkpoints bring their own shape: these keys are ignored with them)
    block_size: int = option(1024, gt=0)  # context length in tokens
    vocab_size: int = option(50304, gt=0)  # token ids (embedding rows): GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = option(12, gt=0)  # transformer blocks
    n_head: int = option(12, gt=0)  # attention heads; n_embd must be a multiple
    n_embd: int = option(768, gt=0)  # width of the residual stream
    dropout: float = option(0.0, ge=0, lt=1)  # 0 for pretraining, 0.1+ for fine-tuning
    bias: bool = False  # biases in Linears and LayerNorms (GPT-2 has them; without is a bit better and faster)
    activation: str = option(
        "gelu_tanh", choices=ACTIVATIONS
    )  # arch=gpt2's MLP: gelu_tanh (OpenAI's GPT-2) or gelu, exact (what nanoGPT trains with); arch=modern's is ReLU²
    arch: str = option(
        "gpt2", choices=ARCHS
    )  # gpt2: GPT-2's architecture (its weights, nanoGPT checkpoints); modern: RoPE, RMSNorm, QK-norm, ReLU², untied head, soft-capped logits (for training from scratch; see above)

    def __post_init__(self):
        check_bounds(self)
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; pick an n_embd that is a multiple of n_head")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        if config.arch == "modern":  # QK-norm
            self.q_norm, self.k_norm = nn.RMSNorm(config.n_embd // config.n_head), nn.RMSNorm(config.n_embd // config.n_head)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0, rope: tuple | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:  # arch='modern': normalize, then rotate by position
            w = self.q_norm.weight.dtype  # normalize in the weight's dtype (under autocast q is bf16, the weight fp32)
            q, k = self.q_norm(q.to(w)).type_as(q), self.k_norm(k.to(w)).type_as(k)
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is None:  # training and plain forward: causal over the T positions
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:
            start = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nh, start + T, hs)
            if T == 1:  # decode: the one new query sees every cached key, so no mask
                y = F.scaled_dot_product_attention(q, k, v)
            elif start == 0:  # prefill of an empty cache: the usual causal mask
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # several queries after cached ones: query i sees keys 0..start+i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


def rotary_tables(head_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_size / 2) of RoPE's angles: position t, frequency i at t * ROPE_BASE^(-2i / head_size)."""
    freqs = ROPE_BASE ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + hs/2]) of x (B, nh, T, hs) by its position's angle (cos, sin: (T, hs/2))."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def norm(config: GPTConfig) -> nn.Module:
    return nn.LayerNorm(config.n_embd, bias=config.bias) if config.arch == "gpt2" else nn.RMSNorm(config.n_embd)


class ReLU2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")  # GPT-2's gelu_new, or nanoGPT's exact GELU
        self.act = gelu if config.arch == "gpt2" else ReLU2()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0, rope: tuple | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, rope)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of every layer for the positions seen so far, in buffers allocated once
    (on the first update, in the dtype the attention produces, e.g. bf16 under autocast).
    GPT.forward(idx, cache=...) appends idx's positions and advances `pos`."""

    def __init__(self, n_layer: int, max_len: int):
        self.max_len, self.pos = max_len, 0
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    def reset(self) -> None:
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at positions pos..pos+T-1; return all keys and values so far."""
        B, nh, T, hs = k.shape
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, {end} were asked for")
        buf = self.k[layer]
        if buf is None or buf.shape[0] != B or buf.dtype != k.dtype or buf.device != k.device:
            self.k[layer] = k.new_empty(B, nh, self.max_len, hs)
            self.v[layer] = v.new_empty(B, nh, self.max_len, hs)
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Draw one token id per row from logits (B, V): (B, 1).

    temperature 0 (or top_k=1) is greedy argmax. top_k keeps the k most likely tokens; top_p
    (nucleus) keeps the smallest set of most likely tokens whose probability adds up to top_p
    (the most likely token always stays). Both may be given: top_k applies first."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        v, _ = torch.topk(logits, top_k)
        logits = logits.masked_fill(logits < v[:, -1:], -float("inf"))  # a slice: a list index is a copy from the host
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        gpt2 = config.arch == "gpt2"
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                **({"wpe": nn.Embedding(config.block_size, config.n_embd)} if gpt2 else {}),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=norm(config),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if gpt2:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
        else:  # RoPE's tables: derived, so not in the state dict
            cos, sin = rotary_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") and gpt2:  # GPT-2: scale residual projections by depth
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif name.endswith("c_proj.weight") or name == "lm_head.weight":  # modern: blocks start as the identity, logits uniform
                torch.nn.init.zeros_(p)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the embeddings that are only looked up (no multiply):
        GPT-2's position embeddings (its token embedding is tied to lm_head, so it counts as a
        weight of the output layer), or the modern arch's untied token embedding."""
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        return n - (self.transformer.wpe if self.config.arch == "gpt2" else self.transformer.wte).weight.numel()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None, all_logits: bool = False):
        """Logits for idx (B, T) and, given targets, the mean cross-entropy (targets of -1 are
        ignored). Without targets only the last position's logits are computed, or with
        all_logits every position's (for scoring, without a loss computed and thrown away).
        With a cache, idx continues the cached positions (cache.pos onwards) and the cache is
        extended."""
        B, T = idx.size()
        start = 0 if cache is None else cache.pos
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than block_size {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.arch == "gpt2":
            x = x + self.transformer.wpe(torch.arange(start, start + T, dtype=torch.long, device=idx.device))
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, rope)
        if cache is not None:
            cache.pos += T
        if targets is None:
            return self.head(self.transformer.ln_f(x if all_logits else x[:, -1:, :])), None  # to sample, only the last position is needed
        return self.logits_and_loss(x, targets)

    def logits_and_loss(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final norm, the output layer and the mean cross-entropy (targets of -1 ignored): the
        part after the blocks, one function that can be compiled on its own (FSDP compiles it
        beside the blocks: gptsuite/parallel.py)."""
        logits = self.head(self.transformer.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer: logits (B, T, vocab_size), soft-capped in the modern arch."""
        logits = self.lm_head(x)
        if self.config.arch == "gpt2":
            return logits
        return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context (e.g. GPT-2's 1024 to 256): crop the position embeddings (or RoPE's tables)."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        if self.config.arch == "gpt2":
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
        else:
            self.rope_cos, self.rope_sin = self.rope_cos[:block_size], self.rope_sin[:block_size]

    def model_args(self) -> dict:
        return asdict(self.config)

    @torch.no_grad()
    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        vocab_limit: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens sampled tokens (B, 1), one step at a time, continuing idx (B, T).

        With use_cache the prompt is prefilled once and each step runs one position against the
        KV cache; past block_size both paths recompute the last block_size tokens each step (see
        the module docstring). vocab_limit masks padded ids past the tokenizer's vocabulary."""
        block = self.config.block_size
        cache = KVCache(len(self.transformer.h), min(block, idx.size(1) + max_new_tokens)) if use_cache else None
        for _ in range(max_new_tokens):
            T = idx.size(1)
            if cache is not None and cache.pos == T - 1 and T <= block:
                logits, _ = self(idx[:, -1:], cache=cache)  # decode: one new position
            elif cache is not None and T <= block:
                cache.reset()
                logits, _ = self(idx, cache=cache)  # prefill
            else:
                logits, _ = self(idx[:, -block:])  # no cache, or the window slides: full recompute
            logits = logits[:, -1, :].float()  # sampled in fp32 whatever the weights' dtype (bf16, int8: gptsuite/weights.py)
            if vocab_limit is not None:
                logits[:, vocab_limit:] = -float("inf")
            idx_next = sample_logits(logits, temperature, top_k, top_p)
            idx = torch.cat((idx, idx_next), dim=1)
            yield idx_next

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        vocab_limit: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """idx (B, T) with max_new_tokens sampled tokens appended: every row of the batch is a
        sample. temperature 0 is greedy. (Stop rules, text and streaming: gptsuite/generate.py.)"""
        return torch.cat([idx, *self.generate_stream(idx, max_new_tokens, temperature, top_k, vocab_limit, top_p, use_cache)], dim=1)
