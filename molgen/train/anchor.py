"""Anchors against forgetting: a penalty that pulls fine-tuned weights back towards the parent's.

- L2-SP (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
  Convolutional Networks", ICML): ``weight / 2 * sum_i (w_i - w0_i)^2`` over the parent's weights,
  the starting point instead of zero as the regulariser's centre.
- EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS):
  ``weight / 2 * sum_i F_i (w_i - w0_i)^2`` with ``F`` the diagonal empirical Fisher information of
  the parent on its own task, here the mean squared gradient of each MOSES train molecule's
  log-likelihood (one molecule per backward pass). ``F`` is divided by its mean, so one
  ``anchor_weight`` means about the same pull for both kinds and the EWC pull is L2-SP's redistributed
  towards the weights MOSES needs.

Only weights the parent has are anchored: rows that fine-tuning added (new tokens, a longer context)
are free. The penalty is zero at the start and grows as the weights move.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Anchor", "fisher_diagonal"]


class Anchor:
    """``penalty(model)``: the L2-SP / EWC term for ``model`` against the weights it has now.

    Args:
        model: the model about to be fine-tuned (its trainable weights now are the anchor ``w0``).
        first_new: per parameter name, the first row fine-tuning added (those rows are not anchored).
        fisher: per parameter name, the diagonal Fisher (EWC); ``None`` is L2-SP (all ones).
        weight: the penalty's factor.
    """

    def __init__(self, model: nn.Module, first_new: dict[str, int] | None = None,
                 fisher: dict[str, torch.Tensor] | None = None, weight: float = 0.01):  # fmt: skip
        self.weight, self.first_new = weight, dict(first_new or {})
        self.kind = "ewc" if fisher is not None else "l2sp"
        self.ref: dict[str, torch.Tensor] = {}
        self.importance: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            rows = self.first_new.get(name, p.size(0) if p.dim() else None)
            self.ref[name] = p.detach()[:rows].clone() if p.dim() else p.detach().clone()
            if fisher is not None:
                self.importance[name] = fisher[name][:rows] if p.dim() else fisher[name]

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``weight / 2 * sum F (w - w0)^2`` (F = 1 for L2-SP), a scalar on the model's device."""
        params = dict(model.named_parameters())
        total = None
        for name, ref in self.ref.items():
            p = params[name]
            cur = p[: ref.size(0)] if p.dim() else p
            diff = (cur - ref.to(cur.device)) ** 2
            if self.importance:
                diff = diff * self.importance[name].to(cur.device)
            term = diff.sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.weight * total


def fisher_diagonal(model: nn.Module, ids: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of a SmilesGPT: the mean over molecules of the squared gradient of
    each molecule's log-likelihood, for every trainable parameter, divided by its mean over all of them.

    Shapes:
        ids: (N, L) padded token ids (``<bos>`` ... ``<eos>``).
    """
    was_training = model.training
    model.eval()  # the parent's function, without dropout
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    try:
        for row in ids:
            length = int((row != pad_id).sum())
            seq = row[:length][None].to(model.device)
            model.zero_grad(set_to_none=True)
            logp = model.sequence_log_prob(seq)
            logp.sum().backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    n = max(len(ids), 1)
    mean = sum(float(s.sum()) for s in sums.values()) / max(sum(s.numel() for s in sums.values()), 1) / n
    return {k: v / n / mean if mean > 0 else torch.ones_like(v) for k, v in sums.items()}
