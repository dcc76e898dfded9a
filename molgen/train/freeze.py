"""Freeze policies: which parts of a pretrained model stay as they are while the rest fine-tunes.

A frozen part gets ``requires_grad_(False)`` (no gradient, so the optimiser, which only takes
trainable parameters, never touches it: no update, no weight decay) and ``.eval()`` (no dropout, no
running statistics), as chemprop freezes its message passing. :class:`~molgen.train.base.PretrainModule`
puts the frozen parts back in eval mode whenever Lightning switches the model to training.

What each policy freezes:

========== ====================================================== ==========================================
policy     SmilesGPT                                              GraphVAE
========== ====================================================== ==========================================
none       nothing                                                nothing
first_k    the first ``k`` transformer blocks                     the first ``k`` GINE blocks of the encoder
head_only  all but the final LayerNorm and the output layer       refused (the decoder has no single head)
encoder    refused (a GPT has no separate encoder)                the whole encoder (GNN, readout, mu, logvar)
lora       every pretrained weight; LoRA adapters train           refused
========== ====================================================== ==========================================

The GPT's output layer is tied to its token embedding (one matrix), so ``head_only`` trains that
matrix (both the input and the output side of every token), ``ln_f``, and nothing else; the position
embedding and every block stay frozen. ``first_k`` leaves the embeddings trainable for the same reason
and because rows added on purpose (new tokens, a longer context) must learn. Freezing the graph-VAE's
encoder keeps its latent space the parent's.

``lora`` (:mod:`molgen.models.lora`, through ``peft``) leaves every pretrained weight as it is and
trains low-rank adapters on the blocks' linear layers (``[finetune] lora_r``, ``lora_alpha``,
``lora_dropout``, ``lora_targets``); nothing is put in eval mode (the adapters' dropout acts in training).

Rows that fine-tuning adds on purpose (new tokens of the target set, a longer context) have no
pretrained value to keep: whatever the policy, a table whose weight the policy freezes still trains
its new rows (``first_new`` of :func:`apply_freeze`), the old rows staying bit-identical
(:func:`molgen.models.lora.train_new_rows`). ``head_only`` thus trains new position rows too, and
``lora`` the new token and position rows beside the adapters. A context grown by interpolation
(``[finetune] context_positions = "interpolate"``, the default) adds no rows: its table is rebuilt from
the parent's and trains only where the policy trains the position embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from molgen.errors import ConfigError
from molgen.models.lora import LoraSpec, add_lora, train_new_rows

__all__ = ["FreezePolicy", "KINDS", "apply_freeze", "frozen_parts", "set_dropout", "check_policy"]

KINDS = ("none", "first_k", "head_only", "encoder", "lora")
_SUPPORTED = {"gpt": ("none", "first_k", "head_only", "lora"), "graph_vae": ("none", "first_k", "encoder")}


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts of a model stay frozen: ``kind`` (one of :data:`KINDS`), for ``first_k`` ``k``, and for
    ``lora`` the adapter's shape (default :class:`~molgen.models.lora.LoraSpec`)."""

    kind: str = "none"
    k: int | None = None
    lora: LoraSpec | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"freeze must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "first_k" and (self.k is None or self.k < 1):
            raise ConfigError("freeze = 'first_k' needs k >= 1, the number of first layers kept frozen")
        if self.kind != "first_k" and self.k is not None:
            raise ConfigError(f"k = {self.k} is for freeze = 'first_k', not {self.kind!r}")
        if self.kind == "lora" and self.lora is None:
            object.__setattr__(self, "lora", LoraSpec())
        if self.kind != "lora" and self.lora is not None:
            raise ConfigError(f"a LoRA spec is for freeze = 'lora', not {self.kind!r}")

    @classmethod
    def parse(cls, policy) -> FreezePolicy:
        """A policy from itself, ``"head_only"``, ``("first_k", 2)``, ``"first_k:2"`` or a config's ``[finetune]``."""
        if isinstance(policy, FreezePolicy):
            return policy
        if policy is None:
            return cls()
        if isinstance(policy, str):
            kind, _, k = policy.partition(":")
            return cls(kind, int(k) if k else None)
        if isinstance(policy, tuple):
            return cls(*policy)
        if policy.freeze == "lora":  # a FinetuneConfig section
            spec = LoraSpec(policy.lora_r, policy.lora_alpha, policy.lora_dropout, tuple(policy.lora_targets),
                            policy.lora_dora)  # fmt: skip
            return cls("lora", policy.k, spec)
        return cls(policy.freeze, policy.k)

    def __str__(self) -> str:
        return f"first_k:{self.k}" if self.kind == "first_k" else self.kind

    def record(self) -> dict:
        """The policy for a provenance record (a LoRA run also its adapter's shape)."""
        return {"freeze": str(self), **({"lora": self.lora.to_dict()} if self.lora else {})}


def check_policy(model_type: str, policy: FreezePolicy, n_layers: int | None = None) -> None:
    """Refuse a policy the model type has no parts for (and a ``k`` beyond its layers)."""
    allowed = _SUPPORTED.get(model_type, ("none",))
    if policy.kind not in allowed:
        raise ConfigError(f"freeze = {policy.kind!r} does not apply to a {model_type} model; use one of {', '.join(allowed)}")
    if policy.kind == "first_k" and n_layers is not None and policy.k > n_layers:
        raise ConfigError(f"freeze = 'first_k' with k = {policy.k}, but the model has {n_layers} layers")


def _layers(model) -> nn.ModuleList:
    return model.blocks if model.model_type == "gpt" else model.encoder.blocks


def frozen_parts(model: nn.Module, policy: FreezePolicy) -> list[nn.Module]:
    """The submodules ``policy`` freezes in ``model`` (a SmilesGPT or a GraphVAE)."""
    check_policy(model.model_type, policy, len(_layers(model)))
    if policy.kind in ("none", "lora"):  # lora: peft freezes the weights; nothing goes to eval mode
        return []
    if policy.kind == "first_k":
        return list(_layers(model)[: policy.k])
    if policy.kind == "encoder":
        return [model.encoder]
    # head_only (GPT): everything but ln_f and the tied wte / lm_head matrix
    parts = [model.wpe, *model.blocks]
    return parts + ([model.cond_proj] if model.cond_proj is not None else [])


def apply_freeze(model: nn.Module, policy, first_new: dict[str, int] | None = None) -> list[nn.Module]:
    """Freeze what ``policy`` says in ``model`` (in place) and return the frozen submodules.

    Args:
        first_new: for a SmilesGPT whose tables fine-tuning grew, the first new row of each
            (``{"wte": parent's vocab_size, "wpe": parent's position rows}``): new rows train whatever
            the policy (see the module docstring).

    Returns:
        the frozen submodules; the caller keeps them in eval mode while training (PretrainModule does).
    """
    policy = FreezePolicy.parse(policy)
    parts = frozen_parts(model, policy)
    for part in parts:
        part.requires_grad_(False)
        part.eval()
    if policy.kind == "lora":
        add_lora(model, policy.lora)
    for name, first in (first_new or {}).items():
        table = getattr(model, name)
        if not table.weight.requires_grad:
            train_new_rows(table, first)
    if (parts or policy.kind == "lora") and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"freeze = {policy} leaves nothing to train")
    return parts


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout of a SmilesGPT to ``p`` (its ``nn.Dropout`` layers and the attention's own
    rate) and record it in its config, so the exported folder says how it was trained."""
    if model.model_type != "gpt":
        raise ConfigError(f"finetune.dropout is for the GPT; a {model.model_type} model keeps its own")
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif hasattr(module, "resid_dropout"):  # CausalSelfAttention: the rate it passes to SDPA
            module.dropout = p
    model.config.dropout = p
