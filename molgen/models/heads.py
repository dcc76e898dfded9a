"""Property heads on a pretrained encoder: "frozen encoder + new head" in two lines.

Both generative models embed molecules (``SmilesGPT.embed``: a pooled final hidden state;
``GraphVAE.embed``: the posterior mean), so either is an encoder for a small property model, the
composition PyG writes as ``GAE(encoder, decoder)``::

    vae = mg.load_pretrained("graph-vae-moses")
    model = EmbedAndPredict(vae, PropertyHead(PropertyHeadConfig(in_dim=vae.embed_dim)))
    model(["CCO", "c1ccccc1O"])  # (2, 1) predictions; only the head trains

Freezing follows chemprop: ``requires_grad_(False)`` and ``.eval()``, and the wrapper keeps a
frozen encoder in eval mode when it is put in training mode. A head is saved on its own, naming
its base by the sha256 of the base's weights: :func:`molgen.models.hub.save_partial`.

A molecule an encoder cannot read (it does not parse, has a token outside the GPT's vocabulary or
more tokens than its context, or an atom outside the VAE's vocabulary) is a row of NaN in the
embedding (``errors="nan"``, the default, with one warning naming the rows) or an
:class:`~molgen.errors.InputError` naming the first such row (``errors="raise"``); its prediction
is NaN, so mask it out of a loss with ``torch.isnan(pred).any(1)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from molgen.errors import InputError

__all__ = ["PropertyHeadConfig", "PropertyHead", "EmbedAndPredict", "freeze_module", "EMBED_ERRORS"]

EMBED_ERRORS = ("nan", "raise")


@dataclass
class PropertyHeadConfig:
    """Shape of a :class:`PropertyHead`: ``layers`` hidden layers of ``hidden`` units (0 layers: linear)."""

    in_dim: int
    out_dim: int = 1
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.0


class PropertyHead(nn.Module):
    """An MLP from an embedding to ``out_dim`` properties: ``(Linear, GELU, Dropout) x layers, Linear``.

    Shapes:
        x: (B, in_dim) -> (B, out_dim); a NaN input row gives a NaN output row.
    """

    model_type = "property_head"
    config_class = PropertyHeadConfig

    def __init__(self, config: PropertyHeadConfig):
        super().__init__()
        self.config = cfg = config
        dims = [cfg.in_dim] + [cfg.hidden] * cfg.layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.GELU(), nn.Dropout(cfg.dropout)]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], cfg.out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def freeze_module(module: nn.Module) -> nn.Module:
    """No gradients and eval mode (dropout off), chemprop's way; returns the module."""
    module.requires_grad_(False)
    return module.eval()


class EmbedAndPredict(nn.Module):
    """A pretrained model's embedding followed by a head.

    Args:
        encoder: a model with ``embed(smiles, ...)`` (``SmilesGPT``, ``GraphVAE``).
        head: any module from ``(B, d)`` embeddings to predictions, e.g. a :class:`PropertyHead`.
        freeze: freeze the encoder (default): only the head's parameters get gradients.
        **embed_options: passed to ``encoder.embed`` (``pooling="last"``, ``batch_size=...``).

    ``forward`` takes SMILES (a list, or one string) or embeddings already computed with
    ``encoder.embed`` (a float tensor; with a frozen encoder, embed a data set once and train the
    head on the tensor). A molecule the encoder cannot read predicts NaN.

    Shapes:
        n SMILES or (n, d) embeddings -> (n, out_dim).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze: bool = True, **embed_options):
        super().__init__()
        self.encoder, self.head, self.frozen = encoder, head, bool(freeze)
        self.embed_options = embed_options
        if self.frozen:
            freeze_module(encoder)

    def train(self, mode: bool = True) -> EmbedAndPredict:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def embed(self, smiles: str | Sequence[str]) -> Tensor:
        """The encoder's embedding, with gradients unless the encoder is frozen. Shapes: n -> (n, d)."""
        return self.encoder.embed(smiles, grad=not self.frozen, **self.embed_options)

    def forward(self, inputs: str | Sequence[str] | Tensor) -> Tensor:
        x = inputs if isinstance(inputs, Tensor) else self.embed(inputs)
        ref = next(self.head.parameters(), None)
        if ref is not None:
            x = x.to(device=ref.device, dtype=ref.dtype)
        return self.head(x)


# -- shared by the models' embed() ----------------------------------------------------------------


def check_errors(errors: str) -> None:
    if errors not in EMBED_ERRORS:
        raise InputError(f"errors must be one of {', '.join(EMBED_ERRORS)}, not {errors!r}")


def report_failures(failed: dict[int, str], errors: str, n: int) -> None:
    """Raise for the first row that cannot be embedded (``errors="raise"``), or warn once naming them."""
    if not failed:
        return
    row, why = next(iter(failed.items()))
    if errors == "raise":
        raise InputError(f"row {row}: {why}")
    shown = "; ".join(f"row {r}: {w}" for r, w in list(failed.items())[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    warnings.warn(
        f"{len(failed)} of {n} molecules cannot be embedded and are rows of NaN "
        f"(torch.isnan(emb).any(1) marks them): {shown}{more}",
        stacklevel=3,
    )


@contextmanager
def embedding(module: nn.Module, grad: bool) -> Iterator[None]:
    """Without ``grad``: no gradients and eval mode, the module's mode restored afterwards. With
    ``grad``: as the caller has it (a model being fine-tuned through its embedding)."""
    if grad:
        yield
        return
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was)
