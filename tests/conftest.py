"""Shared fixtures. GPU tests skip where CUDA is absent; everything else runs on the CPU."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# A fixed set of real, varied drug-like molecules (MOSES-style plus charged, stereo and
# aromatic heterocycles) that unit tests share.
REAL_SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",  # caffeine
    "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",  # (S)-ibuprofen
    "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",  # melatonin
    "O=C(O)c1ccccc1O",  # salicylic acid
    "CC1=CC(=O)c2ccccc2C1=O",  # menadione
    "Cc1ccc(S(=O)(=O)N2CCCC2)cc1",
    "CCOC(=O)c1cnc2ccccc2c1N",
    "O=C(Nc1ccccc1)c1ccco1",
    "CC(C)NCC(O)COc1cccc2ccccc12",  # propranolol
    "C[N+](C)(C)CCO",  # choline (charged)
    "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1",
    "c1ccc2c(c1)ccc1ccccc12",  # phenanthrene
    "CC(=O)N[C@@H](Cc1ccc(O)cc1)C(=O)O",
    "OC[C@H]1O[C@@H](O)[C@H](O)[C@@H](O)[C@@H]1O",  # glucose
    "Cn1cnc2c1c(=O)[nH]c(=O)n2C",  # theobromine-like
    "FC(F)(F)c1ccc(Oc2ccc(cc2)C#N)cc1",
    "O=S(=O)(N)c1ccc(cc1)C(=O)O",
    "C1CCC(CC1)NC(=O)c1ccncc1",
    "Brc1cccs1",
]


@pytest.fixture(scope="session")
def real_smiles() -> list[str]:
    return list(REAL_SMILES)
