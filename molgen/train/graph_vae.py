"""GraphVAE training task for :func:`molgen.train.pretrain`: run config, LightningModule, DataModule.

Graphs come from the memory-mapped cache of :func:`molgen.featurize.graph_cache`, so SMILES are
parsed once per data set, never per epoch. A batch is gathered straight from the flat arrays
(no per-molecule ``Data`` objects). The KL weight rises linearly from 0 to ``beta`` over
``kl_anneal_steps`` (avoids posterior collapse early on); ``free_bits`` leaves that many nats per
latent dimension unpenalised.
"""

from __future__ import annotations

import functools
from typing import Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import DataLoader

from molgen.cache import sha256_file, sha256_strings
from molgen.config import ModelSection, RunConfig, model_section
from molgen.errors import InputError
from molgen.featurize import GraphArrays, collate_arrays, graph_cache
from molgen.models.graph_vae import PRIOR_BUFFERS, GraphVAE, GraphVAEConfig
from molgen.train.base import PretrainModule, register_task, shuffle_generator
from molgen.train.freeze import FreezePolicy, apply_freeze, check_policy

__all__ = ["GraphVAEModelConfig", "GraphVAERunConfig", "GraphVAETask", "GraphDataModule", "collate_arrays",
           "usable", "load_graphs"]  # fmt: skip


class _ELBO(ModelSection):
    """The [model] table's training-only keys: the loss, not the network."""

    beta: float = Field(1.0, ge=0, description="KL weight after annealing")
    kl_anneal_steps: int = Field(5000, ge=0, description="linear KL warm-up from 0 to beta")
    free_bits: float = Field(0.0, ge=0, description="nats per latent dimension not penalised")


# the [model] table: GraphVAEConfig's fields less molgen's graph vocabulary, the prior fitted after
# training (GraphVAE.fit_prior) and the ring rules of generation, plus the loss's keys
GraphVAEModelConfig = model_section(
    GraphVAEConfig,
    name="GraphVAEModelConfig",
    base=_ELBO,
    set_by_task=("atom_vocab", "atom_valence", "fitted_prior", "prior_components", "max_ring", "ring_rules"),
    limits={"latent": Field(ge=1), "hidden": Field(ge=8), "enc_layers": Field(ge=1), "dec_hidden": Field(ge=8),
            "dec_layers": Field(ge=1), "window": Field(ge=1), "max_atoms": Field(ge=2), "dropout": Field(ge=0, lt=1)},  # fmt: skip
)


class GraphVAERunConfig(RunConfig):
    model_type: Literal["graph_vae"]
    model: GraphVAEModelConfig = GraphVAEModelConfig()

    @model_validator(mode="after")
    def _finetune_fits(self):
        check_policy("graph_vae", FreezePolicy.parse(self.finetune), self.model.enc_layers)
        f = self.finetune
        if f.n_train is not None or f.dropout is not None:
            raise ValueError("finetune.n_train and finetune.dropout are for the GPT so far; leave them out for a graph_vae")
        return self


def usable(arrays: GraphArrays, window: int, max_atoms: int) -> np.ndarray:
    """Indices of graphs the decoder can represent: at most ``max_atoms`` atoms, bonds within ``window``."""
    n_atoms = np.diff(arrays.atom_ptr)
    bonds = np.asarray(arrays.bonds)
    span = (bonds[:, 0].astype(np.int64) - bonds[:, 1]) if len(bonds) else np.zeros(0, np.int64)
    n_bonds = np.diff(arrays.bond_ptr)
    has = n_bonds > 0
    widest = np.zeros(len(n_atoms), np.int64)
    if has.any():
        widest[has] = np.maximum.reduceat(span, arrays.bond_ptr[:-1][has])
    return np.flatnonzero((n_atoms <= max_atoms) & (widest <= window))


def load_graphs(dataset: str, split: str, limit: int | None = None) -> tuple[GraphArrays, dict]:
    """Cached graphs of a MOSES split or a molecule file, with a provenance record."""
    if dataset == "moses":
        from molgen.datasets import moses_path, moses_smiles

        path = moses_path(split)
        smiles, key = moses_smiles(split), sha256_file(path)
        name = f"moses/{split}"
    else:
        from molgen.io import read_table

        smiles = read_table(dataset)["smiles"].astype(str).tolist()
        key, name = sha256_strings(smiles), dataset
    if limit:
        smiles = smiles[:limit]
        key = sha256_strings(smiles)
    arrays = graph_cache(smiles, key=key)
    info = {
        "data": name,
        "sha256": key,
        "n_source": len(smiles),
        "n_graphs": len(arrays),
        "skipped": arrays.skipped,
    }
    return arrays, info


class _Indices(torch.utils.data.Dataset):
    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> int:
        return int(self.ids[k])


class GraphDataModule(L.LightningDataModule):
    """Train / validation batches of cached graphs (validation: a seeded subsample of ``val_split``)."""

    def __init__(self, config: GraphVAERunConfig):
        super().__init__()
        self.config = config
        self.info: dict = {}

    def setup(self, stage: str | None = None) -> None:
        d, m = self.config.data, self.config.model
        self.train_arrays, info = load_graphs(d.dataset, d.split, d.limit)
        self.train_ids = usable(self.train_arrays, m.window, m.max_atoms)
        if len(self.train_ids) == 0:
            raise InputError(f"{info['data']}: no molecule fits the graph vocabulary and size limits")
        if d.dataset == "moses":
            self.val_arrays, _ = load_graphs("moses", d.val_split)
            val_ids = usable(self.val_arrays, m.window, m.max_atoms)
        else:  # a file: hold out a seeded slice of it
            rng = np.random.default_rng(self.config.trainer.seed)
            perm = rng.permutation(self.train_ids)
            n_val = min(d.val_size, max(1, len(perm) // 10))
            self.val_arrays, val_ids, self.train_ids = self.train_arrays, perm[:n_val], perm[n_val:]
        rng = np.random.default_rng(self.config.trainer.seed)
        self.val_ids = np.sort(rng.choice(val_ids, min(d.val_size, len(val_ids)), replace=False))
        info["n_train"], info["n_val"] = int(len(self.train_ids)), int(len(self.val_ids))
        self.info = info

    def _loader(self, arrays: GraphArrays, ids: np.ndarray, shuffle: bool) -> DataLoader:
        return DataLoader(
            _Indices(ids),
            batch_size=self.config.trainer.batch_size,
            shuffle=shuffle,
            generator=shuffle_generator(self) if shuffle else None,
            collate_fn=functools.partial(collate_arrays, arrays),
            num_workers=self.config.data.num_workers,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_arrays, self.train_ids, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_arrays, self.val_ids, False)


class GraphVAETask(PretrainModule):
    """ELBO training of a :class:`GraphVAE` with KL annealing and free bits."""

    def __init__(self, config: GraphVAERunConfig, datamodule: GraphDataModule):
        super().__init__(config)
        self.model = GraphVAE(config.model.shape())
        if config.init_from:
            from molgen.models.hub import load_state_into

            # the parent's fitted prior describes the parent's latent space; once the encoder moves it
            # is stale, so the child starts without one (refit it: GraphVAE.fit_prior)
            load_state_into(self.model, config.init_from, skip=PRIOR_BUFFERS)
            self.frozen = apply_freeze(self.model, FreezePolicy.parse(config.finetune))
        self._datamodule = datamodule

    def setup(self, stage: str) -> None:
        self.data_info = self._datamodule.info

    def beta(self) -> float:
        m = self.config.model
        if m.kl_anneal_steps == 0:
            return m.beta
        return m.beta * min(1.0, self.global_step / m.kl_anneal_steps)

    def step_loss(self, batch) -> tuple[torch.Tensor, int]:
        out = self.model(batch, beta=self.beta(), free_bits=self.config.model.free_bits)
        stage = "train" if self.training else "val"
        n = len(batch.ptr) - 1
        self.log(f"{stage}_recon", out["recon"], batch_size=n, prog_bar=True, sync_dist=not self.training)
        self.log(f"{stage}_kl", out["kl"], batch_size=n, prog_bar=True, sync_dist=not self.training)
        return out["loss"], n


def build(config: GraphVAERunConfig):
    datamodule = GraphDataModule(config)
    return GraphVAETask(config, datamodule), datamodule


register_task(GraphVAE, GraphVAERunConfig, build)
