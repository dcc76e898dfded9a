"""SmilesGPT: a small GPT over SMILES tokens, in one readable file (after Karpathy's nanoGPT).

Pre-LayerNorm decoder blocks, ``F.scaled_dot_product_attention`` (flash attention on CUDA),
learned positions, the token embedding tied to the output layer, and an optional condition
vector (e.g. target properties) projected and added to the ``<bos>`` embedding.
:meth:`SmilesGPT.generate` decodes with a key/value cache, temperature, top-k / top-p; each row
stops at its ``<eos>`` and finished rows leave the batch, so a batch costs what its longest
molecule costs only for the rows still running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from molgen.errors import ConfigError, InputError
from molgen.models import draw
from molgen.models.hub import register_model
from molgen.models.smiles_grammar import SmilesGrammar

if TYPE_CHECKING:
    from molgen.models.scaffold import ScaffoldTemplate

__all__ = ["GPTConfig", "SmilesGPT", "KVCache", "condition_rows"]


@dataclass
class GPTConfig:
    """Shape of a SmilesGPT. ``block_size`` counts ``<bos>`` and ``<eos>``."""

    vocab_size: int = 40
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True
    cond_dim: int = 0  # length of the condition vector; 0 = unconditional
    # the named properties behind the condition vector (set by conditional training): {"names": [...],
    # "mean": [...], "std": [...], "partial": bool}; the vector is the standardised values then one
    # "given" flag per name (cond_dim = 2 x names); "partial": trained with names left out at random, so
    # a caller may leave names out (see condition_rows)
    condition: dict | None = None
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None = n_head
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        if self.condition is not None:
            c = self.condition
            names = list(c.get("names", []))
            if not names or any(len(c.get(k, [])) != len(names) for k in ("mean", "std")) or self.cond_dim != 2 * len(names):
                raise ConfigError(f"condition {c!r} needs names, mean and std of one length k and cond_dim = 2k "
                                  f"(cond_dim is {self.cond_dim})")  # fmt: skip
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ConfigError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


class KVCache:
    """Keys and values of every layer for the rows still decoding.

    Shapes:
        k, v per layer: (B, kv_heads, block, head_dim); positions ``[0, pos)`` are filled.
    """

    def __init__(self, cfg: GPTConfig, batch: int, length: int, device, dtype):
        shape = self.shape(cfg, batch, length)
        # empty, not zeros: positions at or after `pos` are never read before they are written
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]

    @staticmethod
    def shape(cfg: GPTConfig, batch: int, length: int) -> tuple[int, int, int, int]:
        """Shape of one layer's keys (or values)."""
        return (batch, cfg.kv_heads, length, cfg.n_embd // cfg.n_head)

    def keep(self, rows: torch.Tensor, pos: int) -> None:
        """Drop finished rows (``rows``: boolean mask over the batch), copying only ``[0, pos)``."""
        self.k = [_compact(k, rows, pos) for k in self.k]
        self.v = [_compact(v, rows, pos) for v in self.v]


def _compact(buf: torch.Tensor, rows: torch.Tensor, pos: int) -> torch.Tensor:
    out = buf.new_empty((int(rows.sum()), *buf.shape[1:]))
    out[:, :, :pos] = buf[rows, :, :pos]
    return out


class CausalSelfAttention(nn.Module):
    """Multi-head attention; with ``n_kv_head < n_head``, each group of ``n_head / n_kv_head`` query
    heads shares one key/value head (grouped-query attention, Ainslie et al. 2023): the cache, and
    the memory traffic that bounds cached decoding on a CPU, shrink by that factor."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head = cfg.n_head, cfg.kv_heads
        self.kv_dim = self.n_kv_head * (cfg.n_embd // cfg.n_head)
        self.c_attn = nn.Linear(cfg.n_embd, cfg.n_embd + 2 * self.kv_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, pos: int = 0):
        B, T, C = x.shape
        H, G, D = self.n_head, self.n_kv_head, C // self.n_head
        q, k, v = self.c_attn(x).split((C, self.kv_dim, self.kv_dim), dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k, v = (t.view(B, T, G, D).transpose(1, 2) for t in (k, v))  # (B, G, T, D)
        if cache is not None:
            cache.k[layer][:, :, pos : pos + T] = k
            cache.v[layer][:, :, pos : pos + T] = v
            k, v = cache.k[layer][:, :, : pos + T], cache.v[layer][:, :, : pos + T]
        if pos and T > 1:
            raise ValueError("a multi-token step after the prefill is not supported")
        if T == 1 and x.device.type == "cpu":
            # one query per row (a cached decoding step): two batched matmuls beat PyTorch's CPU
            # flash kernel at this shape (~1.5x on the attention, 5-10 % of a sampling run with the
            # 6 x 192 model); the GPU keeps the fused kernel. The H / G query heads of a group are
            # the rows of one product with their shared keys.
            qg = q.reshape(B, G, H // G, D)
            att = (qg @ k.transpose(-2, -1)) * (D**-0.5)  # (B, G, H/G, pos + 1)
            y = (att.softmax(-1) @ v).view(B, H, 1, D)
        else:
            # Right padding needs no mask: a real token never attends to the pads after it.
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1, enable_gqa=G != H
            )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None, layer=0, pos=0):
        x = x + self.attn(self.ln_1(x), cache, layer, pos)
        return x + self.mlp(self.ln_2(x))


class SmilesGPT(nn.Module):
    """Decoder-only transformer over SMILES tokens.

    Args:
        config: the model's shape; the only constructor argument. A :class:`SmilesTokenizer`
            is attached as ``model.tokenizer`` by :func:`molgen.models.hub.from_pretrained` or
            by the training task, and is needed for :func:`molgen.sample.sample` and :meth:`log_likelihood`.
    """

    model_type = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        self.tokenizer = None
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.cond_proj = nn.Linear(cfg.cond_dim, cfg.n_embd) if cfg.cond_dim else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    # --- forward --------------------------------------------------------------------------------

    def _hidden(self, idx, condition=None, cache=None, pos=0):
        """Final hidden states for the tokens of ``idx``.

        A conditional model adds the projected condition to the embedding of the first position, the
        ``<bos>`` (rather than a position of its own in front of it): every token keeps its position,
        so a parent made conditional by :meth:`add_condition` starts out computing exactly what it did.

        Shapes:
            idx: (B, T) token ids; condition: (B, cond_dim); returns (B, T, C).
        """
        x = self.wte(idx)  # (B, T, C)
        if self.cond_proj is not None and pos == 0:
            if condition is None:
                raise ValueError(f"this model is conditional: pass condition of shape (B, {self.config.cond_dim})")
            x = torch.cat([x[:, :1] + self.cond_proj(condition.to(x.dtype))[:, None], x[:, 1:]], dim=1)
        T = x.size(1)
        if pos + T > self.wpe.num_embeddings:
            raise ValueError(f"sequence of {pos + T} positions exceeds block_size {self.config.block_size}")
        x = self.drop(x + self.wpe(torch.arange(pos, pos + T, device=idx.device)))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, pos)
        return self.ln_f(x)

    def forward(self, idx, targets=None, condition=None):
        """Logits for the next token at every position, and the mean loss when ``targets`` given.

        Shapes:
            idx: (B, T) ids starting with ``<bos>``; targets: (B, T) next ids, ``<pad>`` ignored;
            condition: (B, cond_dim) or None. Returns logits (B, T, V) and a scalar loss or None.
        """
        logits = self.lm_head(self._hidden(idx, condition))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=self.config.pad_id
            )
        return logits, loss

    def sequence_log_prob(self, ids: torch.Tensor, condition=None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of log-probabilities of each padded sequence (``<bos>`` ... ``<eos>`` ``<pad>``...).

        ``mask`` (aligned with ``ids``) keeps only the tokens where it is True, e.g. the sampled
        (free) tokens of a scaffold-constrained row, ``generate(..., return_free=True)``'s fourth
        output after a False column for ``<bos>``; ``<pad>`` never counts.

        Shapes:
            ids: (B, L); mask: (B, L) bool, its first column ignored; returns (B,).
        """
        logits, _ = self(ids[:, :-1], condition=condition)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)  # (B, L-1)
        if mask is not None:
            return (logp * ((ids[:, 1:] != self.config.pad_id) & mask[:, 1:].to(torch.bool))).sum(1)
        return (logp * (ids[:, 1:] != self.config.pad_id)).sum(1)

    # --- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        max_len: int | None = None,
        use_cache: bool = True,
        grammar: SmilesGrammar | None = None,
        prefix: torch.Tensor | None = None,
        scaffold: ScaffoldTemplate | None = None,
        return_free: bool = False,
    ):
        """Sample ``n`` token sequences in one batch.

        ``logp`` is the model's log-likelihood of each sampled sequence (``<eos>`` included) at
        temperature 1 without top-k/top-p, so it measures the molecule, not the sampler.
        With a ``grammar``, only tokens that keep each row a SMILES prefix are drawn
        (:mod:`molgen.models.smiles_grammar`). ``prefix`` holds token ids every row starts with
        after ``<bos>`` (a fragment to grow, an agent's forced start): they are fed, scored into
        ``logp`` and advanced through the grammar, and sampling continues after them.
        ``scaffold`` (a :class:`~molgen.models.scaffold.ScaffoldTemplate`, needs ``grammar``) forces
        the scaffold's tokens and samples only its decorations; ``return_free`` adds a fourth
        output, (n, L) bool, True where a token was sampled rather than forced.

        Shapes:
            prefix: (P,) or (n, P), without ``<bos>``;
            returns ids (n, L) after ``<bos>`` (prefix included) and padded with ``<pad>``, logp
            (n,), and finished (n,) bool: False where a row reached ``max_len`` without ``<eos>``.
        """
        cfg, dev = self.config, self.device
        max_len = min(max_len or cfg.block_size, cfg.block_size)
        active = torch.arange(n, device=dev)
        seq = torch.full((n, 1), cfg.bos_id, dtype=torch.long, device=dev)  # rows in the batch so far
        start = 0
        if scaffold is not None:
            if grammar is None or prefix is not None:
                raise InputError("scaffold decoding needs the SMILES grammar and no prefix")
            prefix = torch.tensor(scaffold.head, dtype=torch.long)
        if prefix is not None:
            prefix = torch.as_tensor(prefix, dtype=torch.long, device=dev).expand(n, -1)  # (n, P)
            start = prefix.size(1)
            if start >= max_len - 1 or bool(((prefix == cfg.pad_id) | (prefix == cfg.bos_id) | (prefix == cfg.eos_id)).any()):
                raise InputError(f"a prefix is at most {max_len - 2} tokens without <pad>, <bos> or <eos>")
            seq = torch.cat([seq, prefix], 1)
        cond = condition.to(dev) if condition is not None else None
        out = torch.full((n, max_len - 1), cfg.pad_id, dtype=torch.long, device=dev)
        logp = torch.zeros(n, device=dev)
        finished = torch.zeros(n, dtype=torch.bool, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)  # rows of the batch still decoding
        dtype = self.wte.weight.dtype
        if torch.is_autocast_enabled(dev.type):  # keys/values come out in the autocast dtype (bf16)
            dtype = torch.get_autocast_dtype(dev.type)
        cache = KVCache(cfg, n, max_len, dev, dtype) if use_cache else None
        never = torch.tensor([cfg.pad_id, cfg.bos_id], device=dev)
        # no token budget (grammar.start(..., max_tokens=...)): forcing a wandering row to close in time
        # turns it into a large macrocycle rather than a molecule; a row cut at the context stays invalid
        syntax = grammar.start(n, dev, max_len) if grammar is not None else None
        slots = scaffold.start(grammar, n, dev) if scaffold is not None else None
        free = torch.zeros((n, max_len - 1), dtype=torch.bool, device=dev)
        hs = self._hidden(seq, cond, cache, 0)  # (n, 1 + P, C)
        if start:
            out[:, :start] = prefix
            logp += torch.log_softmax(self.lm_head(hs[:, :-1]).float(), -1).gather(2, prefix[..., None]).sum((1, 2))
            for j in range(start):
                if syntax is not None:
                    if not bool(syntax.mask().gather(1, prefix[:, j : j + 1]).all()):
                        raise InputError(f"the prefix breaks SMILES syntax at token {j + 1}; sample with grammar=False to allow it")
                    syntax.update(prefix[:, j])
        h = hs[:, -1]
        for t in range(start, max_len - 1):
            logits = self.lm_head(h).float()  # (b, V)
            # <pad> and <bos> are never a next token; an undertrained model must not emit them
            allowed = logits.index_fill(1, never, float("-inf"))
            if syntax is not None:
                ok = syntax.mask()
                if slots is not None:  # the scaffold's tokens are written, its slots sampled
                    ok, forced, forced_tok = slots.mask(syntax, ok)
                allowed = allowed.masked_fill(~ok, float("-inf"))
            nxt = _sample_next(allowed, temperature, top_k, top_p, generator)  # (b,)
            if slots is not None:
                nxt = torch.where(forced, forced_tok, nxt)
                free[active, t] = ~forced & alive
                depth = syntax.depth.clone()
            if syntax is not None:
                syntax.update(nxt)
            if slots is not None:
                slots.update(nxt, depth, syntax)
            nxt = torch.where(alive, nxt, cfg.pad_id)
            step_logp = torch.log_softmax(logits, -1).gather(1, nxt[:, None]).squeeze(1)
            logp[active] += torch.where(alive, step_logp, 0.0)
            out[active, t] = nxt
            ended = alive & (nxt == cfg.eos_id)
            # an <eos> the grammar had to allow because nothing else fitted is no finished molecule
            finished[active[ended if syntax is None else ended & ~syntax.forced]] = True
            if slots is not None:  # a decoration with no way on ended the row: no finished molecule
                finished[active[ended & slots.stuck]] = False
            alive &= ~ended
            n_alive = int(alive.sum())
            if n_alive == 0 or t == max_len - 2:
                break
            # Finished rows leave the batch only once a quarter has finished: copying the cache
            # on every single <eos> would cost more than computing a few idle rows.
            if n_alive < 0.75 * len(alive):
                active, nxt, seq = active[alive], nxt[alive], seq[alive]
                cond = cond[alive] if cond is not None else None
                if syntax is not None:
                    syntax.keep(alive)
                if slots is not None:
                    slots.keep(alive)
                if cache is not None:
                    cache.keep(alive, t + 1)
                alive = alive[alive]
            if cache is not None:
                h = self._hidden(nxt[:, None], cond, cache, t + 1)[:, -1]
            else:
                seq = torch.cat([seq, nxt[:, None]], 1)
                h = self._hidden(seq, cond)[:, -1]
        return (out, logp, finished, free) if return_free else (out, logp, finished)

    def cache_bytes(self, batch: int) -> int:
        """Memory of one batch's key/value cache in float32, twice over (dropping finished rows copies it)."""
        cfg = self.config
        return 2 * 4 * cfg.n_layer * 2 * math.prod(KVCache.shape(cfg, batch, cfg.block_size))

    @torch.no_grad()
    def log_likelihood(self, smiles, batch_size: int = 512, condition=None) -> np.ndarray:
        """Log-likelihood of given SMILES under the model (e.g. the prior in RL fine-tuning)."""
        tok = self._need_tokenizer()
        self.eval()
        conds = condition_rows(condition, len(smiles), self.config)
        out = []
        for start in range(0, len(smiles), batch_size):
            ids = torch.as_tensor(tok.encode_batch(smiles[start : start + batch_size]), device=self.device)
            c = None if conds is None else torch.as_tensor(conds[start : start + len(ids)], device=self.device)
            out.append(self.sequence_log_prob(ids, c).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    # --- embedding ------------------------------------------------------------------------------

    POOLINGS = ("mean", "last", "max")

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`embed`'s vectors."""
        return self.config.n_embd

    def _check_pooling(self, pooling: str) -> None:
        if pooling not in self.POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(self.POOLINGS)}, not {pooling!r}")

    def pool(self, ids: torch.Tensor, pooling: str = "mean", condition=None) -> torch.Tensor:
        """Pooled final hidden states of padded sequences, with gradients (see :meth:`embed`).

        Shapes:
            ids: (B, L) ``<bos>`` ... ``<eos>`` then ``<pad>``; condition: (B, cond_dim); returns (B, C).
        """
        self._check_pooling(pooling)
        h = self._hidden(ids, condition)  # (B, L, C)
        # the molecule's tokens and <eos>; <bos> is left out: causal, its state is the same for every molecule
        real = (ids != self.config.pad_id) & (ids != self.config.bos_id)  # (B, L)
        if pooling == "last":  # the state at <eos>, which has read the whole molecule
            return h[torch.arange(len(ids), device=ids.device), real.sum(1)]
        if pooling == "max":
            return h.masked_fill(~real[..., None], float("-inf")).amax(1)
        return (h * real[..., None]).sum(1) / real.sum(1, keepdim=True)

    def embed(self, smiles, pooling: str = "mean", batch_size: int = 256, errors: str = "nan",
              canonical: bool = True, condition=None, grad: bool = False) -> torch.Tensor:  # fmt: skip
        """Vectors for molecules: the final hidden states pooled over each molecule's tokens.

        Args:
            smiles: SMILES strings (or RDKit Mols; one string counts as a list of one).
            pooling: ``"mean"`` over the molecule's tokens and ``<eos>`` (default: the best of the
                three at predicting logP from MOSES molecules with a ridge regression), ``"last"``
                (the state at ``<eos>``, the only one that has read the whole molecule), ``"max"``.
            canonical: rewrite each molecule as RDKit's canonical SMILES without stereo first (as
                MOSES writes them), so that the same molecule gives the same vector however it is
                written; the tokenizer then spells it as the model does (Kekulé form).
            errors: ``"nan"``: a molecule that does not parse, has a token outside the vocabulary or
                more tokens than the context (``block_size``) is a row of NaN, with one warning
                naming the rows; ``"raise"``: an :class:`~molgen.errors.InputError` for the first.
            condition: for a conditional model, as in :meth:`log_likelihood`.
            grad: keep gradients and the current train/eval mode (fine-tuning through the
                embedding); by default eval mode under ``torch.no_grad()``, deterministic.

        Shapes:
            n molecules -> (n, n_embd) float32.
        """
        from molgen.chem import to_smiles
        from molgen.models.heads import check_errors, embedding, report_failures

        check_errors(errors)
        self._check_pooling(pooling)
        tok = self._need_tokenizer()
        items = [smiles] if isinstance(smiles, str) else list(smiles)
        conds = condition_rows(condition, len(items), self.config)
        encoded, failed = {}, {}
        for row, s in enumerate(items):
            text = to_smiles(s, isomeric=False) if canonical else s
            try:
                if not isinstance(text, str):
                    raise InputError(f"{s!r} is not a valid molecule")
                ids = tok.encode(text)
            except InputError as err:
                failed[row] = str(err)
                continue
            if len(ids) > self.config.block_size:
                failed[row] = (f"{text!r} has {len(ids)} tokens with <bos>/<eos>, more than the model's "
                               f"context of {self.config.block_size}")  # fmt: skip
            else:
                encoded[row] = ids
        report_failures(failed, errors, len(items))
        out = torch.full((len(items), self.config.n_embd), float("nan"), device=self.device)
        rows = sorted(encoded, key=lambda r: len(encoded[r]))  # batches of like lengths: little padding to compute
        with embedding(self, grad):
            parts = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                width = max(len(encoded[r]) for r in chunk)
                ids = torch.full((len(chunk), width), self.config.pad_id, dtype=torch.long)
                for i, r in enumerate(chunk):
                    ids[i, : len(encoded[r])] = torch.as_tensor(encoded[r])
                c = None if conds is None else torch.as_tensor(conds[chunk], device=self.device)
                parts.append(self.pool(ids.to(self.device), pooling, c).float())
            if rows:
                out = out.index_put((torch.as_tensor(rows, device=self.device),), torch.cat(parts))
        return out

    def resize_vocab(self, new_size: int) -> None:
        """Grow the vocabulary to ``new_size``; new rows start at the mean embedding.

        The mean keeps new tokens' initial logits typical instead of random, so fine-tuning
        on molecules with new tokens starts from a sensible prior.
        """
        old = self.wte.weight.data
        if new_size < old.size(0):
            raise ConfigError(f"cannot shrink the vocabulary from {old.size(0)} to {new_size}")
        wte = nn.Embedding(new_size, old.size(1), device=old.device, dtype=old.dtype)
        wte.weight.data[: old.size(0)] = old
        wte.weight.data[old.size(0) :] = old.mean(0)
        self.wte = wte
        self.lm_head = nn.Linear(old.size(1), new_size, bias=False, device=old.device, dtype=old.dtype)
        self.lm_head.weight = self.wte.weight
        self.config.vocab_size = new_size

    #: how :meth:`extend_context` fills the grown position table
    CONTEXT_POSITIONS = ("interpolate", "mean")

    def extend_context(self, new_block_size: int, positions: str = "mean") -> None:
        """Grow the context to ``new_block_size`` tokens on purpose (e.g. before fine-tuning on longer
        molecules). Sampling (its token budget, the grammar's atom budget, the key/value cache) reads
        ``config.block_size`` and follows.

        ``positions="interpolate"`` stretches the rows pretraining taught (:func:`learnt_positions`)
        over the whole new table by linear interpolation, as a vision transformer's learnt position
        embedding is resized for larger images (Dosovitskiy et al. 2021, section 3.2; Chen et al. 2023
        do the same for rotary positions): every position, the new ones too, then holds a vector the
        blocks know how to read, and neighbours stay distinct. Every row changes, so the model reads
        short molecules a little differently until fine-tuning settles it. The table is a function of
        the parent's: it trains where the freeze policy trains the position embedding (``none``,
        ``first_k``), stays as built under ``head_only`` and ``lora``, and an adapter records how to
        rebuild it rather than storing it. Fine-tuning
        ``smiles-gpt-moses-small`` on 100 molecules of chembl2321810 (64 -> 96 tokens,
        ``scripts/configs/finetune_gpt_chembl2321810.toml``, 1,000 samples) gave valid 0.953 and FCD
        to the held-out 917 7.2, against 0.920 and 12.0 with ``"mean"``; the samples that ``"mean"``
        leaves invalid are rows that lose their way past position 64 and run on to the end of the
        context.

        ``positions="mean"`` keeps the learnt rows, so every shorter sequence scores as before, and
        starts each new row at the mean of the second half of the learnt rows (what "somewhere late
        in a molecule" looks like to the model). The new rows start identical and barely part in
        fine-tuning; starting them distinct (tiling the last learnt rows, noise, a larger learning
        rate on them) did not raise validity above 0.92 on the same run. Repeating the last row would
        repeat an untrained vector: pretraining molecules never reach the last positions (MOSES rows
        have at most 59 of 64 tokens, 99.9 % at most 56), whose rows have only decayed.
        """
        if positions not in self.CONTEXT_POSITIONS:
            raise ConfigError(f"positions must be one of {', '.join(self.CONTEXT_POSITIONS)}, not {positions!r}")
        old = self.wpe.weight.data
        if new_block_size < self.config.block_size:
            raise ConfigError(f"cannot shrink the context from {self.config.block_size} to {new_block_size}")
        wpe = nn.Embedding(new_block_size, old.size(1), device=old.device, dtype=old.dtype)
        if positions == "interpolate":
            learnt = old[: learnt_positions(old)].T[None].float()  # (1, C, k)
            wpe.weight.data[:] = F.interpolate(learnt, size=new_block_size, mode="linear", align_corners=True)[0].T
        else:
            wpe.weight.data[: old.size(0)] = old
            wpe.weight.data[old.size(0) :] = old[self.config.block_size // 2 :].mean(0)
        self.wpe = wpe
        self.config.block_size = new_block_size

    def add_condition(self, names, mean, std, partial: bool = True) -> None:
        """Make an unconditional model conditional on named properties, on purpose (before fine-tuning
        with conditions): a projection of the condition vector (standardised values, then one "given"
        flag per name) added to the ``<bos>`` embedding, its weights and bias zero, so the model starts
        out exactly as its parent, every condition giving the parent's logits; the gradient of the
        loss reaches the weights through the ``<bos>`` state all the same. The condition's place
        follows MolGPT (Bagal et al. 2021, J. Chem. Inf. Model. 62, 2064), which feeds the properties
        in front of the SMILES; added to ``<bos>`` instead of a position of its own, no token's
        position moves, so the learnt position rows stay right.

        Args:
            names: the properties' names, in the vector's order.
            mean, std: each property's mean and standard deviation on the training molecules; callers
                give raw values and :func:`condition_rows` standardises them.
            partial: the training leaves names out at random, so a caller may give only some.
        """
        if self.config.cond_dim:
            raise ConfigError(f"this model is conditional already (cond_dim = {self.config.cond_dim})")
        std = [float(v) for v in std]
        if any(not math.isfinite(v) or v <= 0 for v in std):
            raise ConfigError(f"condition std must be finite and > 0, got {std}")
        condition = {"names": list(names), "mean": [float(v) for v in mean], "std": std, "partial": bool(partial)}
        dim = 2 * len(condition["names"])
        GPTConfig(**{**self.config.__dict__, "cond_dim": dim, "condition": condition})  # the same checks as a file
        w = self.wte.weight
        self.cond_proj = nn.Linear(dim, self.config.n_embd, device=w.device, dtype=w.dtype)
        nn.init.zeros_(self.cond_proj.weight)
        nn.init.zeros_(self.cond_proj.bias)
        self.config.cond_dim, self.config.condition = dim, condition

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ConfigError("this model has no tokenizer attached; load it with molgen.load_pretrained(...)")
        return self.tokenizer


def learnt_positions(wpe: torch.Tensor) -> int:
    """How many leading rows of a position table pretraining taught: up to the last row whose norm is
    at least a quarter of the median row's. Rows past the longest pretraining molecules only decayed
    under weight decay (``smiles-gpt-moses-small``: norms 0.7-0.9 up to position 56, 0.29 and 0.16 at
    57-58, 0.03 after; median 0.55), so they carry no position to stretch."""
    norms = wpe.float().norm(dim=1)
    kept = torch.nonzero(norms >= 0.25 * norms.median()).flatten()
    return max(2, int(kept.max()) + 1) if len(kept) else len(norms)


def _sample_next(logits, temperature, top_k, top_p, generator) -> torch.Tensor:
    """One token per row from temperature-scaled logits filtered by top-k and/or top-p.

    Shapes:
        logits: (B, V) float; returns (B,) long.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) > top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return draw(torch.softmax(logits, -1), generator)


def condition_rows(condition, n: int, config: GPTConfig) -> np.ndarray | None:
    """The condition as the model's ``(n, cond_dim)`` float32 input rows, ``None`` for an unconditional
    model; a clear error for a condition that does not fit the model.

    A model with named conditions (``config.condition``, from conditional training) takes raw
    property values: a dict by name (``{"logp": 2.5, "tpsa": 60}``; a value is one number or ``n``
    numbers, one per row), or one vector (or ``(n, k)`` rows) of all its properties in order.
    They are standardised with the training set's mean and std, and each name's "given" flag is
    set. Names the model does not know are refused, naming those it knows; names left out (and
    ``None``: all of them) leave the property free where the model was trained with names left out
    at random (``partial``), and are refused otherwise. A model with an unnamed ``cond_dim`` takes
    its input vector as it is.
    """
    cond_dim, named = config.cond_dim, config.condition
    if not cond_dim:
        if condition is not None:
            raise InputError("this model is unconditional; do not pass condition")
        return None
    if named is not None:
        return _named_rows(condition, n, named)
    if condition is None:
        raise InputError(f"this model is conditional: pass condition with {cond_dim} values")
    if isinstance(condition, dict):
        raise InputError(f"this model's {cond_dim} condition values have no names: pass them as a vector")
    c = np.asarray(condition, dtype=np.float32)
    c = np.tile(c, (n, 1)) if c.ndim == 1 else c
    if c.shape != (n, cond_dim):
        raise InputError(f"condition has shape {c.shape}, expected ({cond_dim},) or ({n}, {cond_dim})")
    return c


register_model(SmilesGPT.model_type, SmilesGPT)


def _named_rows(condition, n: int, named: dict) -> np.ndarray:
    """Raw values by property name -> standardised values and "given" flags (see :func:`condition_rows`)."""
    names = list(named["names"])
    known = ", ".join(names)
    if condition is None:
        condition = {}
    elif not isinstance(condition, dict):
        rows = np.asarray(condition, dtype=np.float64)
        if rows.shape[-1:] != (len(names),) or rows.ndim > 2:
            raise InputError(f"condition has shape {rows.shape}: give the model's {len(names)} properties ({known}) "
                             f"by name, e.g. {{{names[0]!r}: ...}}, or as ({len(names)},) or ({n}, {len(names)}) values")  # fmt: skip
        condition = {name: rows[..., i] for i, name in enumerate(names)}
    unknown = [k for k in condition if k not in names]
    if unknown:
        raise InputError(f"this model is conditioned on {known}; it has no condition {', '.join(map(repr, unknown))}")
    missing = [k for k in names if k not in condition]
    if missing and not named.get("partial"):
        raise InputError(f"this model needs every one of its conditions ({known}); {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing")  # fmt: skip
    out = np.zeros((n, 2 * len(names)), dtype=np.float32)
    for i, name in enumerate(names):
        if name not in condition:
            continue
        try:
            v = np.broadcast_to(np.asarray(condition[name], dtype=np.float64), (n,))
        except (TypeError, ValueError):
            raise InputError(f"condition {name!r} must be a number or {n} numbers, got {condition[name]!r}") from None
        if not np.isfinite(v).all():
            raise InputError(f"condition {name!r} must be finite, got {condition[name]!r}")
        out[:, i] = (v - named["mean"][i]) / named["std"][i]
        out[:, len(names) + i] = 1.0
    return out
