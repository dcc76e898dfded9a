"""Fréchet ChemNet Distance with the ChemNet weights shipped in the ``fcd_torch`` wheel.

``fcd_torch`` is what MOSES itself uses, so FCD values here are comparable with MOSES tables. Only
its network and weights are used: the weights load with ``torch.load(weights_only=True)`` (no
pickled code), the one-hot encoding is vectorised here (same tokens and padding as
``fcd_torch.utils.get_one_hot``), and the distance avoids SciPy's deprecated ``sqrtm(disp=)``.

FCD is biased upwards at small sample sizes (a perfect generator scores about 0.6 at 2,000
molecules, 0.12 at 10,000, 0.03 at 30,000): compare values only at equal ``n``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.linalg

from molgen.errors import MissingDependencyError

__all__ = ["chemnet", "one_hot", "activations", "fcd_stats", "frechet_distance"]

# fcd_torch's vocabulary; 'X' is the unknown token, '.' ends the string
_VOCAB = ["C", "N", "O", "H", "F", "Cl", "P", "B", "Br", "S", "I", "Si", "#", "(", ")", "+", "-", "1",
          "2", "3", "4", "5", "6", "7", "8", "=", "[", "]", "@", "c", "n", "o", "s", "X", "."]
_INDEX = {t: i for i, t in enumerate(_VOCAB)}
_UNK, _END = _INDEX["X"], _INDEX["."]
_PAD_LEN = 350
# a character followed by r, i or l is read as one two-letter symbol (Br, Cl, Si), as fcd_torch does
_TOKEN = re.compile(r".[ril]?", re.DOTALL)


@lru_cache(maxsize=4)
def chemnet(device: str = "cpu"):
    """ChemNet as a torch module in eval mode on ``device`` (loaded once per process and device).

    Shapes:
        input (B, 35, 350) one-hot / 35 -> output (B, 512) penultimate activations.
    """
    try:
        import fcd_torch
        from fcd_torch.utils import load_imported_model
    except ImportError as err:
        raise MissingDependencyError("FCD needs fcd_torch: pip install fcd_torch==1.0.7") from err
    import torch

    path = Path(fcd_torch.__file__).parent / "ChemNet_v0.13_pretrained.pt"
    model = load_imported_model(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(device)


def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _token_ids(smiles: str) -> list[int]:
    """Token indices of one SMILES, cut at its first '.', at most 349 tokens, then the end token."""
    tokens = _TOKEN.findall(smiles + ".")
    ids = [_INDEX.get(tokens[0], _UNK)]
    for tok in tokens[1:_PAD_LEN - 1]:
        if tok[0] == ".":
            break
        ids.append(_INDEX.get(tok, _UNK))
    ids.append(_END)
    return ids


def one_hot(smiles: Sequence[str]):
    """ChemNet input for canonical SMILES.

    Shapes:
        returns (B, 35, 350) float32, each used row one-hot divided by 35, padding rows zero.
    """
    import torch

    x = torch.zeros(len(smiles), _PAD_LEN, len(_VOCAB))
    rows, cols, toks = [], [], []
    for i, s in enumerate(smiles):
        ids = _token_ids(s)
        rows.extend([i] * len(ids))
        cols.extend(range(len(ids)))
        toks.extend(ids)
    x[rows, cols, toks] = 1.0 / len(_VOCAB)
    return x.transpose(1, 2)


def activations(smiles: Sequence[str], batch_size: int = 512, threads: int | None = None,
                progress=None, device: str | None = "cpu") -> np.ndarray:
    """ChemNet activations of canonical SMILES on ``device`` ("auto": CUDA when present).

    On CUDA, TF32 is switched off so that activations match the CPU's float32 ones.

    Shapes:
        returns (N, 512) float32.
    """
    import torch

    device = _device(device)
    model = chemnet(device)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        out = np.zeros((len(smiles), 512), dtype=np.float32)
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for start in range(0, len(smiles), batch_size):
                batch = smiles[start:start + batch_size]
                out[start:start + len(batch)] = model(one_hot(batch).to(device)).cpu().numpy()
                if progress is not None:
                    progress(len(batch))
    finally:
        torch.set_num_threads(old)
    return out


def fcd_stats(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean (512,) and covariance (512, 512) of activations; ``None`` for fewer than 2 molecules."""
    if len(acts) < 2:
        warnings.warn(f"FCD needs at least 2 valid molecules ({len(acts)} given)", stacklevel=2)
        return None
    return acts.mean(0), np.cov(acts.T)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """‖mu1 − mu2‖² + Tr(S1 + S2 − 2·sqrt(S1·S2)), computed as fcd_torch does."""
    diff = np.atleast_1d(mu1) - np.atleast_1d(mu2)
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # nearly singular product: regularise as fcd_torch does
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FCD: imaginary component {np.max(np.abs(covmean.imag))} in sqrt(S1·S2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
