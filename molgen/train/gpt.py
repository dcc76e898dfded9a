"""Training task for SmilesGPT: its run config, tokenised data on disk, the LightningDataModule and the
LightningModule (next-token cross-entropy, with a teacher's soft targets when distilling).

The training set is tokenised once into a memory-mapped ``(N, L)`` uint8 array under
``molgen.cache.cache_dir("smiles_tokens", key)``, keyed by the sha256 of the source file and the
vocabulary, so pretraining never re-parses 1.58M SMILES and a changed input never meets a stale
cache. Building it streams the file twice (vocabulary, then ids) and keeps only the array in
memory-mapped form: peak memory is a few hundred MB for MOSES.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.utils.data import DataLoader, Dataset, Sampler

from molgen.cache import cache_dir, sha256_file, sha256_strings
from molgen.config import ConditionConfig, DistillConfig, RunConfig, model_section
from molgen.errors import ConfigError, InputError
from molgen.files import atomic_path
from molgen.models.gpt import GPTConfig, SmilesGPT
from molgen.models.lora import trainable_share
from molgen.tokenize import SmilesTokenizer, tokenize
from molgen.train.anchor import Anchor, fisher_diagonal
from molgen.train.base import PretrainModule, register_task, shuffle_generator
from molgen.train.freeze import FreezePolicy, apply_freeze, check_policy, set_dropout

__all__ = ["GPTModelConfig", "GPTRunConfig", "TokenizedSmiles", "tokenized_file", "GPTDataModule", "GPTTask"]

# the [model] table: GPTConfig's fields less those the data sets (the vocabulary and its special ids)
GPTModelConfig = model_section(
    GPTConfig,
    name="GPTModelConfig",
    set_by_task=("vocab_size", "pad_id", "bos_id", "eos_id", "cond_dim", "condition"),  # conditions: [condition]
    limits={"n_layer": Field(ge=1), "n_head": Field(ge=1), "n_embd": Field(ge=8), "n_kv_head": Field(ge=1),
            "block_size": Field(ge=8), "dropout": Field(ge=0, lt=1)},  # fmt: skip
)


class GPTRunConfig(RunConfig):
    model_type: Literal["gpt"]
    model: GPTModelConfig = GPTModelConfig()
    distill: DistillConfig = DistillConfig()
    condition: ConditionConfig = ConditionConfig()

    def teacher(self) -> str | None:
        return self.distill.teacher

    @model_validator(mode="after")
    def _policy_fits(self):
        check_policy("gpt", FreezePolicy.parse(self.finetune))
        return self

    @model_validator(mode="after")
    def _tag_fits(self):
        if self.finetune.rehearsal_tag and not self.finetune.rehearsal:
            raise ValueError("finetune.rehearsal_tag marks the rehearsal rows: set finetune.rehearsal > 0 too")
        if self.finetune.rehearsal_tag and self.finetune.iterate:
            raise ValueError("finetune.rehearsal_tag cannot be combined with finetune.iterate yet; leave one of them out")
        if self.finetune.rehearsal_tag and self.finetune.anchor:
            raise ValueError("finetune.rehearsal_tag cannot be combined with finetune.anchor (the anchor's Fisher "
                             "information is the untagged parent's); leave one of them out")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _condition_fits(self):
        if not self.condition.properties:
            return self
        ft = self.finetune
        clash = [what for what, on in (("distill.teacher", self.distill.teacher), ("finetune.rehearsal", ft.rehearsal),
                                       ("finetune.anchor", ft.anchor), ("finetune.freeze = 'lora'", ft.freeze == "lora"))
                 if on]  # fmt: skip
        if clash:
            raise ValueError(f"[condition] properties cannot be combined with {clash[0]} (its molecules or weights have "
                             "no condition); leave one of them out")  # fmt: skip
        from molgen.data import CONDITION_PROPERTIES

        columns = [p for p in self.condition.properties if p not in CONDITION_PROPERTIES]
        if columns and self.data.dataset == "moses":
            raise ValueError(f"[condition] {', '.join(map(repr, columns))}: not an RDKit property ({', '.join(CONDITION_PROPERTIES)}), "
                             "and MOSES has no other columns; give [data] dataset = a file with that column")  # fmt: skip
        return self

_CHUNK = 100_000


def _read_smiles_chunks(path: Path, limit: int | None = None):
    """Yield lists of SMILES from a MOSES-style csv(.gz) with a ``SMILES`` column, in chunks."""
    for chunk in pd.read_csv(path, usecols=["SMILES"], chunksize=_CHUNK, nrows=limit):
        yield chunk["SMILES"].tolist()


class TokenizedSmiles:
    """A tokenised data set: ``ids`` (N, L) uint8 right-padded with ``<pad>``, and its tokenizer."""

    def __init__(self, ids: np.ndarray, tokenizer: SmilesTokenizer, info: dict):
        self.ids, self.tokenizer, self.info = ids, tokenizer, info

    def __len__(self) -> int:
        return len(self.ids)


def tokenized_file(path: str | os.PathLike, tokenizer: SmilesTokenizer | None = None, kekule: bool = False) -> TokenizedSmiles:
    """Tokenise a SMILES csv(.gz) once and memory-map the cached result afterwards.

    Args:
        path: a file with a ``SMILES`` column (MOSES layout).
        tokenizer: the vocabulary to use; ``None`` builds one from the file (cached too).
        kekule: with ``tokenizer=None``, build a Kekulé vocabulary (SMILES rewritten without aromatic atoms).
    """
    path = Path(path)
    source_sha = sha256_file(path)
    if tokenizer is None:
        vocab_path = cache_dir("smiles_vocab") / f"{source_sha[:24]}{'-kekule' if kekule else ''}.json"
        if not vocab_path.exists():
            smiles = (s for chunk in _read_smiles_chunks(path) for s in chunk)
            built = SmilesTokenizer.from_smiles(smiles, kekule=kekule)
            _atomic_write(vocab_path, built.save)
        tokenizer = SmilesTokenizer.load(vocab_path)
    key = sha256_strings([source_sha, *tokenizer.itos, *(["<kekule>"] if tokenizer.kekule else [])])[:24]
    folder = cache_dir("smiles_tokens", key)
    ids_path = folder / "ids.npy"
    if not ids_path.exists():
        _atomic_write(ids_path, lambda p: _encode_file(path, tokenizer, p))
        (folder / "meta.json").write_text(json.dumps({"source": str(path), "sha256": source_sha}))
    ids = np.load(ids_path, mmap_mode="r")
    info = {"file": path.name, "sha256": source_sha, "n_molecules": int(len(ids))}
    return TokenizedSmiles(ids, tokenizer, info)


def _encode_file(path: Path, tokenizer: SmilesTokenizer, out: Path) -> None:
    # each SMILES is spelled once (the Kekulé rewrite is the slow part); the strings, not the ids, stay in memory
    chunks = [[tokenizer.spell(s) for s in c] for c in _read_smiles_chunks(path)]
    n = sum(len(c) for c in chunks)
    width = 2 + max(len(tokenize(s)) for c in chunks for s in c)
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(n, width))
    plain = SmilesTokenizer(tokenizer.itos)  # the strings are spelled already
    row = 0
    for chunk in chunks:
        arr[row : row + len(chunk)] = plain.encode_batch(chunk, max_len=width).astype(np.uint8)
        row += len(chunk)
    arr.flush()
    del arr


def _atomic_write(target: Path, write) -> None:
    """Write via a temporary name then rename, so concurrent ranks never read a half file."""
    with atomic_path(target) as tmp:
        write(tmp)


class _Rows(Dataset):
    """Rows of a token array; optionally re-written as a randomised SMILES (augmentation)."""

    def __init__(self, ids: np.ndarray, tokenizer: SmilesTokenizer, augment: float = 0.0):
        self.ids, self.tokenizer, self.augment = ids, tokenizer, augment

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        row = np.asarray(self.ids[i], dtype=np.int64)
        if self.augment and random.random() < self.augment:
            row = self._randomised(row)
        return row

    def _randomised(self, row: np.ndarray) -> np.ndarray:
        from molgen.chem import randomize_smiles

        smiles = randomize_smiles(self.tokenizer.decode(row), seed=random.randrange(2**31))
        try:
            new = self.tokenizer.encode(smiles) if smiles else None
        except InputError:  # a randomised form may use a token the vocabulary lacks
            new = None
        if new is None or len(new) > len(row):
            return row
        out = np.full_like(row, self.tokenizer.pad_id)
        out[: len(new)] = new
        return out


def collate(rows) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Stack rows and cut the padding columns that no row of this batch uses; ``(row, condition)``
    items (:class:`_Conditioned`) give the ids and the stacked conditions.

    Shapes:
        returns (B, L) long with L = longest row in the batch, or that and (B, cond_dim) float32.
    """
    if isinstance(rows[0], tuple):
        return collate([r for r, _ in rows]), torch.from_numpy(np.stack([c for _, c in rows]))
    batch = torch.from_numpy(np.stack(rows))
    width = int((batch != 0).sum(1).max())
    return batch[:, :width]


class _Conditioned(Dataset):
    """Rows with their condition: the row's properties standardised by the model's mean and std, then
    one "given" flag per property; each property is left out (value 0, flag 0) with chance ``drop``,
    and always where it is NaN (a molecule RDKit could not read), so the model also learns to
    generate with only some properties given (condition dropout, as classifier-free guidance trains
    its unconditional model: Ho & Salimans 2022).
    """

    def __init__(self, rows: Dataset, values: np.ndarray, condition: dict, drop: float):
        self.rows, self.drop = rows, drop
        self.z = ((values - np.asarray(condition["mean"])) / np.asarray(condition["std"])).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        z = self.z[i]
        given = np.isfinite(z)
        if self.drop:
            given &= np.array([random.random() >= self.drop for _ in z])
        return self.rows[i], np.concatenate([np.where(given, z, 0.0), given]).astype(np.float32)


class _Mixed(Dataset):
    """Target rows (indices ``[0, n_target)``, augmented as configured) then rehearsal rows (MOSES,
    as they are), both right-padded to one width so a batch of both stacks. With ``tag`` the target
    rows come conditioned (``(row, condition)``, the tag unset) and each rehearsal row carries ``tag``,
    the condition "this is a MOSES molecule" (``[finetune] rehearsal_tag``)."""

    def __init__(self, target: _Rows | _Conditioned, rehearsal: np.ndarray, tag: np.ndarray | None = None):
        self.target, self.rehearsal, self.tag = target, rehearsal, tag
        ids = target.rows.ids if isinstance(target, _Conditioned) else target.ids
        self.width = max(ids.shape[1], rehearsal.shape[1])

    def __len__(self) -> int:
        return len(self.target) + len(self.rehearsal)

    def __getitem__(self, i):
        n = len(self.target)
        item = self.target[i] if i < n else np.asarray(self.rehearsal[i - n], dtype=np.int64)
        cond = None
        if self.tag is not None:
            item, cond = item if i < n else (item, self.tag)
        row = np.pad(item, (0, self.width - len(item)))  # <pad> is id 0
        return row if cond is None else (row, cond)


class RehearsalBatches(Sampler):
    """Batches of target rows with a share ``fraction`` of rehearsal rows mixed into each (experience
    replay of the pretraining data against forgetting; e.g. Robins 1995, "Catastrophic forgetting,
    rehearsal and pseudorehearsal"). An epoch is one pass over the shuffled target rows, ``take`` of
    them a batch; each batch adds ``round(len * fraction / (1 - fraction))`` rehearsal rows drawn
    (with replacement) from the pool, whose indices follow the target's. With ``weights`` (one per
    target row, ``[finetune] weight_by``) an epoch is as many target rows drawn by weight with
    replacement; ``fraction`` 0 gives plain batches.
    """

    def __init__(self, n_target: int, n_pool: int, batch_size: int, fraction: float, generator: torch.Generator,
                 weights: np.ndarray | None = None):  # fmt: skip
        self.n_target, self.n_pool, self.fraction, self.generator = n_target, n_pool, fraction, generator
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.take = max(1, round(batch_size * (1 - fraction)))

    def __len__(self) -> int:
        return -(-self.n_target // self.take)

    def __iter__(self):
        if self.weights is None:
            order = torch.randperm(self.n_target, generator=self.generator).tolist()
        else:  # property-guided: an epoch of draws by weight, with replacement
            order = torch.multinomial(self.weights, self.n_target, replacement=True, generator=self.generator).tolist()
        for start in range(0, self.n_target, self.take):
            chunk = order[start : start + self.take]
            if not self.n_pool:  # weighted batches without rehearsal
                yield chunk
                continue
            m = round(len(chunk) * self.fraction / (1 - self.fraction))
            pool = torch.randint(self.n_pool, (m,), generator=self.generator) + self.n_target
            yield chunk + pool.tolist()


#: the condition ``[finetune] rehearsal_tag`` sets on rehearsal rows: ``sample(..., condition={"moses": 1})``
REHEARSAL_TAG = "moses"


def moses_rows(tokenizer: SmilesTokenizer, n: int, seed: int, limit: int) -> np.ndarray:
    """A seeded ``n`` MOSES train molecules encoded with ``tokenizer`` (those it can read within ``limit``
    tokens; a MOSES parent reads them all): rehearsal rows and the EWC Fisher's molecules."""
    from molgen.datasets import moses_sample

    smiles = moses_sample("train", n, seed)
    keep = [s for s in smiles if len(tokenizer.tokens(s)) + 2 <= limit and all(t in tokenizer.stoi for t in tokenizer.tokens(s))]
    if len(keep) < len(smiles):
        print(f"MOSES train: {len(smiles) - len(keep)} of {len(smiles)} molecules left out (tokens outside the "
              f"vocabulary or longer than {limit})")  # fmt: skip
    return tokenizer.encode_batch(keep).astype(np.uint8)


class GPTDataModule(L.LightningDataModule):
    """Training rows (MOSES or a file) and a seeded validation subsample."""

    def __init__(self, config: GPTRunConfig, tokenizer: SmilesTokenizer | None = None):
        super().__init__()
        self.config = config
        d = config.data
        if d.dataset == "moses":
            from molgen.datasets import moses_path

            n_train = config.finetune.n_train
            if n_train:  # a seeded sample of the split, in memory (e.g. conditional fine-tuning)
                from molgen.datasets import moses_sample

                train = moses_sample(d.split, n_train, config.trainer.seed)[: d.limit]
                self._setup_in_memory(train, tokenizer, f"moses/{d.split} (seeded {len(train):,})")
            elif d.limit:  # tiny runs: tokenise in memory, no cache
                train = pd.read_csv(moses_path(d.split), usecols=["SMILES"], nrows=d.limit)["SMILES"].tolist()
                self._setup_in_memory(train, tokenizer, f"moses/{d.split}[:{d.limit}]")
            else:
                data = tokenized_file(moses_path(d.split), tokenizer, kekule=bool(d.kekule))
                self.tokenizer, self.train_ids = data.tokenizer, data.ids
                self.info = {"name": f"moses/{d.split}", **data.info}
            self.val_ids = self._moses_val(moses_path(d.val_split))
        else:
            self._setup_from_file(Path(d.dataset), tokenizer)
        self._file = None  # the data file and its canonical SMILES, read once for column lookups
        self.train_weights = self._property_weights() if config.finetune.weight_by else None
        self.rehearsal_ids = None
        f = config.finetune.rehearsal
        if f:  # enough pool for every step's draws, within reason
            t = config.trainer
            n_pool = int(min(50_000, max(1_000, t.max_steps * round(t.batch_size * f))))
            self.rehearsal_ids = moses_rows(self.tokenizer, n_pool, t.seed, self.max_tokens())
            self.info["rehearsal"] = {"fraction": f, "pool": len(self.rehearsal_ids), "source": "moses/train"}
        self.train_values = self.val_values = None
        self.condition: dict | None = None  # the model's names, mean and std; set by build() once the model exists
        if config.condition.properties:
            self._compute_conditions(config.condition)
        elif config.finetune.rehearsal_tag:  # the target rows leave the tag unset (NaN: not given)
            self.train_values = np.full((len(self.train_ids), 1), np.nan)
            self.val_values = np.full((len(self.val_ids), 1), np.nan)

    def _compute_conditions(self, c: ConditionConfig) -> None:
        """The raw ``[condition]`` properties of every training and validation row: RDKit's computed from
        the rows themselves (cached), a column's looked up by canonical SMILES in the data file, so that
        they follow every row the data set kept. A missing value leaves that property out of the row."""
        from molgen.chem import canonicalize
        from molgen.data import CONDITION_PROPERTIES, property_values

        computed = [p for p in c.properties if p in CONDITION_PROPERTIES]
        columns = [p for p in c.properties if p not in CONDITION_PROPERTIES]
        values = []
        for ids in (self.train_ids, self.val_ids):
            smiles = self.tokenizer.decode_batch(np.asarray(ids))
            found = dict(zip(computed, property_values(smiles, computed, n_jobs=c.n_jobs).T, strict=True)) if computed else {}
            if columns:
                canon = [canonicalize(s) for s in smiles]
                found.update({p: self._file_column(p, "[condition] properties").reindex(canon).to_numpy(np.float64)
                              for p in columns})  # fmt: skip
            values.append(np.stack([found[p] for p in c.properties], 1))
        self.train_values, self.val_values = values
        missing = dict(zip(c.properties, np.isnan(self.train_values).T, strict=True))
        unread = int(np.any([missing[p] for p in computed], 0).sum()) if computed else 0
        if unread:
            print(f"conditions: RDKit cannot read {unread} of {len(self.train_values)} training molecules; they train "
                  "with their properties left out")  # fmt: skip
        absent = {p: int(missing[p].sum()) for p in columns}
        for p, k in absent.items():
            if k:
                print(f"conditions: {k} of {len(self.train_values)} training molecules have no {p!r}; they train with it left out")
            if k == len(self.train_values):
                raise InputError(f"[condition] {p!r}: no training molecule has a number in that column")
        self.info["condition"] = {"properties": c.properties, "drop": c.drop, "unreadable": unread, "missing": absent}

    def _file_column(self, column: str, what: str) -> pd.Series:
        """The data file's numeric ``column`` by canonical SMILES (a molecule listed twice takes its mean
        value); the file is read and canonicalised once, whatever the number of columns asked for."""
        from molgen.chem import canonicalize

        source = self.config.data.dataset
        if source == "moses":
            raise ConfigError(f"{what}: {column!r} needs [data] dataset to be a file or named data set with that column")
        if self._file is None:
            df = read_molecules(source)
            self._file = df, [canonicalize(s) if ok else None for s, ok in zip(df["smiles"], df["valid"], strict=True)]
        df, canon = self._file
        if column not in df.columns:
            raise InputError(f"{source}: no column {column!r} for {what}; columns: {list(df.columns)}")
        measured = pd.Series(pd.to_numeric(df[column], errors="coerce").to_numpy(), index=canon)
        return measured[measured.index.notna()].groupby(level=0).mean()

    def condition_stats(self) -> tuple[list[float], list[float]]:
        """Mean and std of each property over the training rows: a new condition's standardisation."""
        return np.nanmean(self.train_values, 0).tolist(), np.nanstd(self.train_values, 0).tolist()

    def _setup_in_memory(self, smiles: list[str], tokenizer, name: str) -> None:
        if tokenizer is None:
            tokenizer = SmilesTokenizer.from_smiles(smiles, kekule=bool(self.config.data.kekule))
        elif added := tokenizer.extend(smiles):  # fine-tuning data with new tokens: grow on purpose
            print(f"{name}: added {len(added)} tokens to the parent vocabulary: {added}")
        self.tokenizer = tokenizer
        smiles, too_long = self._within_reach(smiles, name)
        if not smiles:
            raise InputError(f"{name}: every molecule is longer than {self.max_tokens()} tokens; raise "
                             f"{'finetune.max_block_size' if self.config.init_from else 'model.block_size'}")  # fmt: skip
        self.train_ids = self.tokenizer.encode_batch(smiles).astype(np.uint8)
        self.info = {"name": name, "sha256": sha256_strings(smiles), "n_molecules": len(smiles)}
        if too_long:
            self.info["too_long_skipped"] = too_long

    def max_tokens(self) -> int:
        """The longest row (with ``<bos>``/``<eos>``) a model of this run can read: a parent's context
        grows up to ``finetune.max_block_size``; a model from scratch has ``model.block_size``."""
        return self.config.finetune.max_block_size if self.config.init_from else self.config.model.block_size

    def _within_reach(self, smiles: list[str], what: str) -> tuple[list[str], int]:
        """The molecules of at most :meth:`max_tokens` tokens, and how many were longer (reported)."""
        limit = self.max_tokens()
        keep = [s for s in smiles if len(self.tokenizer.tokens(s)) + 2 <= limit]
        if len(keep) < len(smiles):
            print(f"{what}: skipped {len(smiles) - len(keep)} of {len(smiles)} molecules longer than {limit} tokens")
        return keep, len(smiles) - len(keep)

    def _property_weights(self) -> np.ndarray:
        """The training rows' sampling probabilities from their measured ``[finetune] weight_by`` values
        (:func:`molgen.data.property_weights`), matched to the rows kept by canonical SMILES (a molecule
        listed twice takes its mean value)."""
        from molgen.chem import canonicalize
        from molgen.data import property_weights

        ft, source = self.config.finetune, self.config.data.dataset
        rows = [canonicalize(s) for s in self.tokenizer.decode_batch(np.asarray(self.train_ids))]
        y = self._file_column(ft.weight_by, "finetune.weight_by").reindex(rows).to_numpy()
        missing = np.flatnonzero(~np.isfinite(y))
        if len(missing):
            raise InputError(f"{source}: {len(missing)} of {len(rows)} training molecules have no finite {ft.weight_by!r} "
                             f"(first: {rows[missing[0]]}); fill the column or drop those rows")  # fmt: skip
        w = property_weights(y, ft.weight_direction, ft.weight_scheme, ft.weight_k, ft.weight_temperature)
        top = np.argsort(-w)[: max(1, len(w) // 10)]
        self.info["weights"] = {"by": ft.weight_by, "direction": ft.weight_direction, "scheme": ft.weight_scheme,
                                "k": ft.weight_k, "temperature": ft.weight_temperature,
                                "effective_n": float(1 / np.sum(w**2)), "top_decile_share": float(w[top].sum()),
                                "mean": float(y.mean()), "weighted_mean": float(np.sum(w * y))}  # fmt: skip
        print(f"{ft.weight_by}-weighted sampling ({ft.weight_scheme}, {ft.weight_direction}): the best tenth of the "
              f"{len(w)} training molecules takes {w[top].sum():.0%} of the draws; mean {ft.weight_by} "
              f"{y.mean():.3g} -> {np.sum(w * y):.3g} as drawn")  # fmt: skip
        return w

    def augment(self) -> float:
        """The chance of a randomised SMILES per training row: ``data.augment``, or when unset 0.5 for a
        fine-tuning set of fewer than 1,000 molecules (so few are learnt, not memorised) and 0 otherwise."""
        d = self.config.data
        if d.augment is not None:
            return d.augment
        return 0.5 if self.config.task == "finetune" and len(self.train_ids) < 1000 else 0.0

    def _moses_val(self, path: Path) -> np.ndarray:
        smiles = pd.read_csv(path, usecols=["SMILES"])["SMILES"]
        take = np.random.default_rng(self.config.trainer.seed).permutation(len(smiles))[: self.config.data.val_size]
        return self._encode_known(smiles.iloc[np.sort(take)].tolist(), f"{path.name} (validation)")

    def _setup_from_file(self, path: Path, tokenizer) -> None:
        df = read_molecules(str(path))
        smiles = df.loc[df["valid"], "smiles"].tolist()
        if not smiles:
            raise InputError(f"{path}: no valid SMILES to train on")
        n_train, seed = self.config.finetune.n_train, self.config.trainer.seed
        if n_train:  # the rest is held out for molgen finetune's report (molgen.finetune), never seen here
            from molgen.data import target_split

            smiles = [smiles[i] for i in target_split(len(smiles), n_train, seed)[0]]
        order = np.random.default_rng(seed).permutation(len(smiles))
        n_val = max(1, min(self.config.data.val_size, int(len(smiles) * self.config.data.val_fraction)))
        val = [smiles[i] for i in order[:n_val]]
        train = [smiles[i] for i in order[n_val:]][: self.config.data.limit]
        self._setup_in_memory(train, tokenizer, path.name)
        self.info["invalid_skipped"] = int((~df["valid"]).sum())
        if n_train:
            self.info["target_split"] = {"n_train": n_train, "held_out": int(df["valid"].sum()) - n_train, "seed": seed}
        self.val_ids = self._encode_known(val, f"{path.name} (validation)")

    def _encode_known(self, smiles: list[str], what: str) -> np.ndarray:
        """Encode validation SMILES, skipping (and reporting) those with unknown tokens."""
        missing = self.tokenizer.missing(smiles)
        if missing:
            keep = [s for s in smiles if not any(t not in self.tokenizer.stoi for t in self.tokenizer.tokens(s))]
            print(f"{what}: skipped {len(smiles) - len(keep)} molecules with tokens outside the vocabulary {dict(missing)}")
            smiles = keep
        smiles, _ = self._within_reach(smiles, what)
        return self.tokenizer.encode_batch(smiles).astype(np.uint8)

    def train_dataloader(self):
        d = self.config.data
        rows = _Rows(self.train_ids, self.tokenizer, self.augment())
        if self.condition is not None:
            rows = _Conditioned(rows, self.train_values, self.condition, self.config.condition.drop)
        if self.rehearsal_ids is not None or self.train_weights is not None:
            pool = 0 if self.rehearsal_ids is None else len(self.rehearsal_ids)
            batches = RehearsalBatches(len(rows), pool, self.config.trainer.batch_size, self.config.finetune.rehearsal,
                                       shuffle_generator(self), self.train_weights)  # fmt: skip
            tag = np.array([1.0, 1.0], np.float32) if self.config.finetune.rehearsal_tag else None  # moses = 1, given
            data = rows if self.rehearsal_ids is None else _Mixed(rows, self.rehearsal_ids, tag)
            return DataLoader(data, batch_sampler=batches, collate_fn=collate,
                              num_workers=d.num_workers, persistent_workers=d.num_workers > 0)  # fmt: skip
        return DataLoader(
            rows,
            batch_size=self.config.trainer.batch_size,
            shuffle=True,
            generator=shuffle_generator(self),
            collate_fn=collate,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
        )

    def val_dataloader(self):
        rows = _Rows(self.val_ids, self.tokenizer)
        if self.condition is not None:  # every property given: val_nll measures the model as asked
            rows = _Conditioned(rows, self.val_values, self.condition, 0.0)
        return DataLoader(rows, batch_size=self.config.trainer.batch_size, collate_fn=collate)


def read_molecules(name_or_path: str) -> pd.DataFrame:
    """A molecule table (``smiles``, ``valid``) from a file or a named data set of :mod:`molgen.datasets`."""
    from molgen import datasets
    from molgen.io import read_table

    if not Path(name_or_path).exists() and name_or_path in datasets.list()["name"].tolist():
        return datasets.load(name_or_path)
    return read_table(name_or_path)


# element families: a new atom token starts from a known relative's row (I from Br, Se from S)
_FAMILIES = (("F", "Cl", "Br", "I"), ("O", "S", "Se", "Te"), ("N", "P", "As"), ("C", "Si", "Ge"), ("B", "Al"))


def related_token(token: str, known: dict[str, int]) -> str | None:
    """A known token to start a new token's embedding from: a bracket atom's plain element
    (``[C@@H]`` -> ``C``, ``[nH+]`` -> ``n``), else the nearest element of its family that is known
    (``I`` -> ``Br``), a two-digit ring label from the highest known one; ``None`` when nothing is related."""
    from molgen.tokenize import parse_bracket

    if token.startswith("%") and token[1:].isdigit():
        labels = [t for t in known if t.isdigit() or (t.startswith("%") and t[1:].isdigit())]
        return max(labels, key=lambda t: int(t.lstrip("%")), default=None)
    atom = parse_bracket(token) if token.startswith("[") else None
    symbol = atom.symbol if atom else token
    if atom and symbol in known:
        return symbol
    for family in _FAMILIES:
        plain = symbol.capitalize()
        if plain in family:
            i = family.index(plain)
            for j in sorted(range(len(family)), key=lambda j: (abs(j - i), -j)):
                near = family[j] if symbol[0].isupper() else family[j].lower()
                if j != i and near in known:
                    return near
    return None


def relate_new_tokens(model: SmilesGPT, tokenizer: SmilesTokenizer, first_new: int) -> dict[str, str]:
    """Start each token added for fine-tuning (ids from ``first_new``) at a related known token's
    embedding (:func:`related_token`); tokens with no relative keep ``resize_vocab``'s mean row. The
    output layer is the same matrix, so a new token starts as likely as its relative wherever that fits."""
    known = {t: i for t, i in tokenizer.stoi.items() if i < first_new}
    chosen = {}
    with torch.no_grad():
        for token in tokenizer.itos[first_new:]:
            source = related_token(token, known)
            if source is not None:
                model.wte.weight[tokenizer.stoi[token]] = model.wte.weight[known[source]]
                chosen[token] = source
    return chosen


def fit_context(model: SmilesGPT, longest: int, limit: int, positions: str = "interpolate") -> dict | None:
    """Extend ``model``'s context on purpose when training rows are longer than it (``longest`` tokens
    with ``<bos>``/``<eos>``): to the longest row plus an eighth, for samples a little longer than the
    data, rounded up to a multiple of 8, at most ``limit``; ``positions`` as in
    :meth:`~molgen.models.gpt.SmilesGPT.extend_context`. Returns what changed, or ``None``."""
    old = model.config.block_size
    if longest <= old:
        return None
    new = context_for(longest, limit)
    model.extend_context(new, positions)
    return {"from": old, "to": new, "positions": positions}


def context_for(longest: int, limit: int) -> int:
    """The context for training rows of at most ``longest`` tokens: an eighth more, rounded up to a
    multiple of 8, at most ``limit`` (a fine-tuned parent's grown context; a from-scratch control's)."""
    return min(limit, -(-int(longest * 1.125) // 8) * 8)


class GPTTask(PretrainModule):
    """Next-token cross-entropy on SMILES; ``val_nll`` is nats per token.

    With ``[distill] teacher``, the training loss is ``(1 - alpha) * CE + alpha * T^2 * KL(teacher || model)``
    over the real (non-pad) positions, the teacher frozen in eval mode; ``val_nll`` stays the plain
    cross-entropy on the validation molecules, comparable with a model trained without a teacher.
    """

    def __init__(self, config: GPTRunConfig, tokenizer: SmilesTokenizer, rows: list[np.ndarray] | None = None,
                 condition_stats: tuple[list[float], list[float]] | None = None):  # fmt: skip
        """``condition_stats``: the ``[condition]`` properties' mean and std on the training rows, which
        standardise a new condition (a conditional parent keeps its own)."""
        super().__init__(config)
        self.context: dict | None = None  # {"from", "to", "rows_longer"} when fine-tuning extended the context
        self.new_tokens: dict[str, str] = {}  # token added for fine-tuning -> the known token its row started from
        self.teacher = None
        self.first_new: dict[str, int] = {}  # grown table -> its first new row (trains whatever the freeze policy)
        self.trainable: dict | None = None  # {"trainable", "total", "fraction"} when fine-tuning
        self.anchor: Anchor | None = None
        if config.distill.teacher:
            from molgen.models.hub import from_pretrained

            self.teacher_info = teacher_record(config.distill.teacher)  # once: it hashes the weights
            self.teacher = from_pretrained(config.distill.teacher, device="cpu", model_type="gpt").eval()
            self.teacher.requires_grad_(False)
            if self.teacher.config.cond_dim:
                raise ConfigError(f"[distill] teacher {config.distill.teacher!r} is conditional; distillation takes an unconditional teacher")
            if self.teacher.config.vocab_size != len(tokenizer):
                extra = tokenizer.itos[self.teacher.config.vocab_size :]
                raise ConfigError(
                    f"[distill] teacher {config.distill.teacher!r} knows {self.teacher.config.vocab_size} tokens; "
                    f"the training data also has {extra}: a teacher gives no targets for tokens it never saw"
                )
        if config.init_from:
            from molgen.models.hub import from_pretrained

            self.model = from_pretrained(config.init_from, device="cpu", model_type="gpt").train()
            if self.model.config.cond_dim:  # its condition must reach the loss, by the same names
                names = (self.model.config.condition or {}).get("names")
                if names != config.condition.properties:
                    has = f"conditioned on {names}" if names else f"conditional on {self.model.config.cond_dim} unnamed values"
                    raise ConfigError(f"init_from {config.init_from!r} is {has}; fine-tune it with [condition] properties "
                                      f"= {names or '(names it does not have)'}")  # fmt: skip
            else:
                self._add_condition(config, condition_stats)
                if config.finetune.rehearsal_tag:  # a flag, given only on the rehearsal rows (0 and 1 as they are)
                    self.model.add_condition([REHEARSAL_TAG], [0.0], [1.0], partial=True)
                    print(f"rehearsal rows tagged: condition {REHEARSAL_TAG!r} = 1 on MOSES rows, unset on the target's")
            parent_rows = {"wte": self.model.config.vocab_size, "wpe": self.model.wpe.num_embeddings}
            if len(tokenizer) > self.model.config.vocab_size:
                first_new = self.model.config.vocab_size
                self.model.resize_vocab(len(tokenizer))
                self.new_tokens = relate_new_tokens(self.model, tokenizer, first_new)
            lengths = np.concatenate([(r != tokenizer.pad_id).sum(1) for r in rows or []] or [np.zeros(0, int)])
            parent_block = self.model.config.block_size
            self.context = fit_context(self.model, int(lengths.max(initial=0)), config.finetune.max_block_size,
                                       config.finetune.context_positions)  # fmt: skip
            if self.context is not None:
                if self.context["positions"] == "interpolate":  # no new rows: a table rebuilt from the parent's
                    parent_rows["wpe"] = self.model.wpe.num_embeddings
                self.context["rows_longer"] = int((lengths > parent_block).sum())
                print(f"context extended from {parent_block} to {self.context['to']} tokens: "
                      f"{self.context['rows_longer']} of {len(lengths)} training and validation molecules are longer "
                      f"than the parent's {parent_block}")  # fmt: skip
            if config.finetune.dropout is not None:
                set_dropout(self.model, config.finetune.dropout)
            self.first_new = {t: n for t, n in parent_rows.items() if getattr(self.model, t).num_embeddings > n}
            self.model.tokenizer = tokenizer
            if config.finetune.anchor:  # before the freeze policy: EWC's Fisher is the parent's, on MOSES
                self.anchor = self._anchor(config, tokenizer)
            self.frozen = apply_freeze(self.model, FreezePolicy.parse(config.finetune), self.first_new)
            if self.model.cond_proj is not None:  # the condition is what this run teaches, whatever stays frozen
                self.model.cond_proj.requires_grad_(True)
            if self.anchor is not None:  # anchor only what trains
                trains = {n for n, p in self.model.named_parameters() if p.requires_grad}
                self.anchor.ref = {n: v for n, v in self.anchor.ref.items() if n in trains}
            self.trainable = trainable_share(self.model)
            print(f"fine-tuning {self.trainable['trainable']:,} of {self.trainable['total']:,} parameters "
                  f"({self.trainable['fraction']:.2%}; freeze {FreezePolicy.parse(config.finetune)})")  # fmt: skip
        else:
            self.model = SmilesGPT(config.model.shape(vocab_size=len(tokenizer)))
            self._add_condition(config, condition_stats)
        self.model.tokenizer = tokenizer

    def _add_condition(self, config: GPTRunConfig, stats) -> None:
        c = config.condition
        if not c.properties:
            return
        mean, std = stats
        constant = [name for name, v in zip(c.properties, std, strict=True) if not v > 0]
        if constant:
            raise InputError(f"[condition] {', '.join(constant)}: the same value for every training molecule; "
                             "there is nothing to condition on")  # fmt: skip
        self.model.add_condition(c.properties, mean, std, partial=c.drop > 0)
        print(f"conditional on {', '.join(f'{k} (mean {m:.3g}, std {s:.3g})' for k, m, s in zip(c.properties, mean, std, strict=True))}"
              f"; each left out of a training row with chance {c.drop:g}")  # fmt: skip

    def _anchor(self, config: GPTRunConfig, tokenizer: SmilesTokenizer) -> Anchor:
        ft = config.finetune
        first_new = {f"{t}.weight": n for t, n in self.first_new.items()}
        fisher = None
        if ft.anchor == "ewc":
            ids = torch.from_numpy(moses_rows(tokenizer, ft.fisher_molecules, config.trainer.seed + 1,
                                              self.model.config.block_size).astype(np.int64))  # fmt: skip
            print(f"EWC: Fisher information of the parent on {len(ids)} MOSES train molecules", flush=True)
            fisher = fisher_diagonal(self.model, ids, self.model.config.pad_id)
        return Anchor(self.model, first_new, fisher, ft.anchor_weight)

    def step_loss(self, batch):
        condition = None
        if isinstance(batch, (tuple, list)):  # (ids, conditions) from a conditional data set
            batch, condition = batch
        x, y = batch[:, :-1], batch[:, 1:]
        logits, loss = self.model(x, y, condition=condition)
        real = y != self.model.config.pad_id
        if self.teacher is not None and self.training:
            d = self.config.distill
            with torch.no_grad():
                self.teacher.eval()  # Lightning's train() reaches the teacher too
                soft = torch.log_softmax(self.teacher(x)[0].float()[real] / d.temperature, -1)  # (N, V)
            log_q = torch.log_softmax(logits.float()[real] / d.temperature, -1)
            kl = F.kl_div(log_q, soft, log_target=True, reduction="batchmean")  # per real token
            loss = (1 - d.alpha) * loss + d.alpha * d.temperature**2 * kl
        if self.anchor is not None and self.training:
            penalty = self.anchor.penalty(self.model)
            self.log("anchor", penalty)
            loss = loss + penalty
        return loss, int(real.sum())

    def save_model(self, directory):
        """The export: a LoRA run writes its adapter (small, naming the base); any other a full checkpoint."""
        policy = FreezePolicy.parse(self.config.finetune) if self.config.init_from else None
        if policy is None or policy.kind != "lora":
            return super().save_model(directory)
        from molgen.models.hub import save_adapter

        return save_adapter(self.model.eval(), directory, self.config.init_from, policy.lora, self.first_new,
                            self.provenance(), positions=(self.context or {}).get("positions", "mean"))  # fmt: skip

    def provenance(self) -> dict:
        prov = super().provenance()
        if self.config.init_from:
            ft = self.config.finetune
            prov["finetune"] = {**FreezePolicy.parse(ft).record(), "context": self.context, "new_tokens": self.new_tokens,
                                "trainable": self.trainable, "rehearsal": ft.rehearsal, "rehearsal_tag": ft.rehearsal_tag,
                                "anchor": {"kind": ft.anchor, "weight": ft.anchor_weight} if ft.anchor else None}  # fmt: skip
        if self.teacher is not None:  # a name like "smiles-gpt-moses" may later hold other weights
            prov["teacher"] = self.teacher_info
        return prov

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        # the teacher is rebuilt from its checkpoint on resume; the run's file holds only the student
        for key in [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]:
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})


def teacher_record(name_or_dir: str) -> dict:
    """Which weights a student learnt from: the teacher's name, its weights' sha256, its run and steps."""
    from molgen.models.hub import CONFIG_NAME, WEIGHTS_NAME, resolve

    folder = resolve(name_or_dir)
    prov = json.loads((folder / CONFIG_NAME).read_text()).get("provenance", {})
    return {"name": str(name_or_dir), "sha256": sha256_file(folder / WEIGHTS_NAME),
            "run": prov.get("run"), "steps": prov.get("steps")}  # fmt: skip


def build(config: GPTRunConfig):
    """The GPT task and its data for a run config of any task (registered for ``model_type = "gpt"``)."""
    from molgen.models.hub import VOCAB_NAME, resolve

    # keep a parent's ids (new tokens in the data are appended); a student speaks its teacher's vocabulary
    tokenizer = SmilesTokenizer.load(resolve(config.init_from) / VOCAB_NAME) if config.init_from else None
    kekule = config.data.kekule
    if config.distill.teacher:
        taught = SmilesTokenizer.load(resolve(config.distill.teacher) / VOCAB_NAME)
        if kekule not in (None, taught.kekule):
            raise ConfigError(
                f"[data] kekule = {str(kekule).lower()}, but the teacher writes "
                f"{'Kekulé' if taught.kekule else 'aromatic'} SMILES: a student learns its teacher's form"
            )
        tokenizer, kekule = tokenizer or taught, taught.kekule
    if tokenizer is not None and kekule is not None:  # e.g. an aromatic parent taught to write Kekulé SMILES
        tokenizer.kekule = kekule
    datamodule = GPTDataModule(config, tokenizer)
    stats = datamodule.condition_stats() if config.condition.properties else None
    module = GPTTask(config, datamodule.tokenizer, [datamodule.train_ids, datamodule.val_ids], stats)
    datamodule.condition = module.model.config.condition  # the rows are standardised as the model reads them
    module.data_info = datamodule.info
    return module, datamodule


register_task(SmilesGPT, GPTRunConfig, build)
