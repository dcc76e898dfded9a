"""LoRA adapters for SmilesGPT, through Hugging Face ``peft``.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) keeps
a pretrained weight ``W`` frozen and learns ``W + (alpha / r) * B @ A`` with ``A`` (r x in) and ``B``
(out x r), ``B`` starting at zero so the adapted model starts as its base. ``peft`` injects the
layers into our own ``nn.Module`` by module name (``target_modules``), so nothing here re-implements
the maths: :func:`add_lora` injects, :func:`lora_state` / :func:`load_lora_state` read and write the
adapter's tensors, :func:`merge_lora` folds ``B @ A`` into ``W`` (peft's ``merge``) and puts the
plain ``nn.Linear`` back, so a merged model is an ordinary SmilesGPT that samples at full speed and
saves with :func:`~molgen.models.hub.save_pretrained`.

A fine-tuning run may also grow the vocabulary (new tokens of the target set) or the context (longer
molecules): those new embedding rows have no pretrained value to keep, so they train with the adapter
(:func:`train_new_rows`: the old rows' gradient is masked to zero and the table is kept out of weight
decay, so the old rows stay bit-identical) and travel in the adapter folder beside it.

SmilesGPT's linear layers, the default targets: ``c_attn`` (query/key/value), ``c_proj`` (the
attention's and the MLP's output projections) and ``c_fc`` (the MLP's expansion), in every block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from molgen.errors import ConfigError

__all__ = ["LoraSpec", "DEFAULT_TARGETS", "add_lora", "has_lora", "lora_state", "load_lora_state", "merge_lora",
           "train_new_rows", "trainable_share"]  # fmt: skip

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")


@dataclass(frozen=True)
class LoraSpec:
    """An adapter's shape: rank ``r``, scale ``alpha`` (the update is ``alpha / r * B @ A``), dropout on
    the adapter's input, the names of the ``nn.Linear`` modules it adapts (matched as name suffixes), and
    ``dora``: weight-decomposed LoRA (Liu et al. 2024, "DoRA", arXiv:2402.09353; peft's ``use_dora``), which
    also learns each output row's magnitude (one value per row) and merges like LoRA."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dora: bool = False

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"lora_r must be >= 1, not {self.r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.dropout}")
        if not self.targets:
            raise ConfigError("lora_targets is empty: name the linear layers to adapt, e.g. c_attn, c_proj, c_fc")

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets), "dora": self.dora}


def add_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA layers into ``model`` in place (peft's ``inject_adapter_in_model``): every parameter
    but the adapters' stops training. Unknown or non-linear targets are one ConfigError."""
    from peft import LoraConfig, inject_adapter_in_model

    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    unknown = sorted(set(spec.targets) - linear)
    if unknown:
        raise ConfigError(f"lora_targets {unknown} are not linear layers of this {type(model).__name__}; "
                          f"its linear layers: {', '.join(sorted(linear - {'lm_head'}))}")  # fmt: skip
    if "lm_head" in spec.targets:
        raise ConfigError("lora_targets: lm_head is the token embedding (tied weights); adapt the blocks' layers")
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.targets),
                        bias="none", use_dora=spec.dora)  # fmt: skip
    try:
        return inject_adapter_in_model(config, model)
    except ValueError as err:  # peft's own checks, e.g. a target it cannot wrap
        raise ConfigError(f"lora: {str(err).splitlines()[0]}") from None


def _lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` holds unmerged LoRA layers."""
    return bool(_lora_layers(model))


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors only (peft's names, without the adapter name), detached on the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`lora_state`'s tensors into a model that :func:`add_lora` prepared with the same spec."""
    from peft import set_peft_model_state_dict

    expected = {k for k in lora_state(model)}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(f"the adapter's tensors do not fit its spec (missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        set_peft_model_state_dict(model, state)
    except RuntimeError as err:
        raise ConfigError(f"the adapter's tensors do not fit the base model: {str(err).splitlines()[0]}") from None


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (peft's ``merge``) and put the plain ``nn.Linear`` back,
    in place: the same function, an ordinary model again (its state dict loads into a fresh SmilesGPT)."""
    for name, layer in _lora_layers(model):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def train_new_rows(table: nn.Embedding, first_new: int) -> int:
    """Let the rows ``first_new:`` of an embedding table train while the rows before stay as they are
    (a hook zeroes their gradient; ``frozen_rows`` on the weight keeps it out of weight decay, which
    would otherwise shrink them). Returns the number of trainable values."""
    weight = table.weight
    n_new = weight.size(0) - first_new
    if n_new <= 0:
        return 0
    weight.requires_grad_(True)
    weight.frozen_rows = first_new  # read by PretrainModule.configure_optimizers (no weight decay)
    mask = torch.zeros(weight.size(0), 1, dtype=weight.dtype, device=weight.device)
    mask[first_new:] = 1
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))
    return n_new * weight.size(1)


def trainable_share(model: nn.Module) -> dict:
    """How much of ``model`` trains: parameters that get a gradient (new rows of a partly trained table
    counted alone) against all parameters, as peft's ``print_trainable_parameters`` counts them."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            rows = getattr(p, "frozen_rows", 0)
            trainable += p.numel() - rows * (p.numel() // p.size(0) if p.dim() else 1)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}
