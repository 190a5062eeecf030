"""A small decoder-only transformer policy, trained from scratch, with a KV-cached sampler.

Prompts of different lengths are left-padded so that every row of a batch generates its next token
at the same index; positions are counted from each row's first real token so padding changes
nothing. Small enough (~0.2M parameters at the defaults) to run GRPO on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import BOS, EOS, PAD, VOCAB, encode

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the policy."""

    vocab_size: int = len(VOCAB)
    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    max_len: int = 48


def _rope_tables(pos: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, head_dim / 2) of rotary embeddings at integer positions ``pos`` (B, T)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=pos.device).float() / head_dim)
    ang = pos.float()[..., None] * inv
    return ang.cos()[:, None], ang.sin()[:, None]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021), half-split layout as in GPT-NeoX."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class _Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 layout)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp(self.ln2(x))
        return x, (k, v)


class Policy(nn.Module):
    """Character-level causal language model used as the RL policy."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied embeddings: fewer parameters to learn from scratch
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        past: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits for every position of ``tokens``.

        Args:
            tokens: (B, T) token ids; with ``past``, only the new tokens.
            valid: (B, T_past + T) bool, False at padding: all keys seen so far, past included.
            past: the KV cache returned by the previous call, or None.

        Returns:
            (B, T, vocab) logits and the updated KV cache.
        """
        t = tokens.shape[1]
        t_all = valid.shape[1]
        t_past = t_all - t
        # Position = index among the row's real tokens, so left padding shifts nothing.
        pos_all = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        # Rotary positions encode offsets between tokens, which is what copying, reversing and
        # adding need; they transfer from short warm-up strings to longer ones better than
        # learned absolute positions.
        rope = _rope_tables(pos_all[:, t_past:], self.cfg.d_model // self.cfg.n_heads)
        x = self.tok(tokens)
        causal = torch.ones(t, t_all, dtype=torch.bool, device=tokens.device).tril(diagonal=t_past)
        mask = causal[None] & valid[:, None, :]
        # A padding query would attend to nothing (NaN); let every query see itself.
        own = torch.zeros(t, t_all, dtype=torch.bool, device=tokens.device)
        own[:, t_past:] = torch.eye(t, dtype=torch.bool, device=tokens.device)
        mask = mask | own[None]
        mask4 = mask[:, None]
        new_past: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask4, rope, None if past is None else past[i])
            new_past.append(kv)
        return self.head(self.ln_f(x)), new_past


def pad_prompts(prompts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts as BOS + characters, left-padded to the longest; returns (ids, valid)."""
    enc = [[BOS, *encode(p)] for p in prompts]
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), PAD, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e) :] = torch.tensor(e)
    return ids.to(device), (ids != PAD).to(device)


def completion_mask(completions: torch.Tensor) -> torch.Tensor:
    """True for completion tokens up to and including the first EOS (what the policy chose)."""
    is_eos = completions == EOS
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return ~after_eos


@torch.no_grad()
def generate(
    model: Policy,
    prompt_ids: torch.Tensor,
    prompt_valid: torch.Tensor,
    max_new: int,
    temperature: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample completions with a KV cache; ``temperature == 0`` is greedy.

    Returns (B, max_new) token ids; everything after a row's first EOS is PAD. Decoding stops
    early once every row has emitted EOS.
    """
    b = prompt_ids.shape[0]
    device = prompt_ids.device
    out = torch.full((b, max_new), PAD, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    valid = prompt_valid
    logits, past = model(prompt_ids, valid)
    for i in range(max_new):
        last = logits[:, -1, :]
        if temperature > 0:
            probs = torch.softmax(last.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = last.argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out[:, i] = nxt
        done = done | (nxt == EOS)
        if bool(done.all()) or i == max_new - 1:
            break
        valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
        logits, past = model(nxt[:, None], valid, past)
    return out


def token_logprobs(
    model: Policy,
    prompt_ids: torch.Tensor,
    prompt_valid: torch.Tensor,
    completions: torch.Tensor,
) -> torch.Tensor:
    """Log-probabilities (B, T_c) of each completion token under ``model`` (with gradients).

    Tokens after the first EOS are PAD and get meaningless values; mask them with `completion_mask`.
    """
    seq = torch.cat([prompt_ids, completions], dim=1)
    valid = torch.cat([prompt_valid, torch.ones_like(completions, dtype=torch.bool)], dim=1)
    logits, _ = model(seq, valid)
    tp = prompt_ids.shape[1]
    # Logits at position j predict token j + 1: the completion is predicted from tp - 1 onwards.
    pred = logits[:, tp - 1 : -1, :].float()
    return torch.log_softmax(pred, dim=-1).gather(-1, completions[..., None]).squeeze(-1)


def n_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "KVCache",
    "ModelConfig",
    "Policy",
    "completion_mask",
    "generate",
    "n_parameters",
    "pad_prompts",
    "token_logprobs",
]
