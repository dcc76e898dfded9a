"""Generative models (SmilesGPT, GraphVAE) and their checkpoint hub.

``from molgen.models import load_pretrained`` loads any shipped or saved model by name or folder.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "load_pretrained"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else goes to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pretrained(name_or_dir: str, device: str = "auto"):
    """Load a model by shipped name (e.g. ``"smiles-gpt-moses"``) or checkpoint folder."""
    from molgen.models.hub import from_pretrained

    return from_pretrained(name_or_dir, device=device)
