"""Reinforcement learning against the prior: REINVENT with Augmented Hill-Climb.

The agent starts as a copy of the prior SmilesGPT and learns to make the molecules an objective
likes while the prior keeps it on chemistry the prior knows (Olivecrona et al. 2017, "Molecular
de-novo design through deep reinforcement learning", J. Cheminform. 9:48; REINVENT 2.0, Blaschke
et al. 2020, J. Chem. Inf. Model. 60:5918). For each sampled sequence ``x`` with score ``S(x)``
in [0, 1]::

    augmented(x) = log P_prior(x) + sigma * S(x)
    loss         = mean over x of (log P_agent(x) - augmented(x)) ** 2

Augmented Hill-Climb (Thomas et al. 2022, J. Cheminform. 14:68) keeps only the best ``topk``
fraction of each batch by score in that mean, which they measured to reach high scores in far
fewer oracle calls; ``topk = 1`` is plain REINVENT. Defaults ``sigma = 60``, ``topk = 0.5`` are
those of the AHC reference code (SMILES-RNN). Each step also replays a few of the best molecules
so far (experience replay, Olivecrona et al. 2017), and the rewards pass through REINVENT 2.0's
identical-scaffold diversity filter (:mod:`molgen.guide.memory`).

:func:`rl_loss` is the pure loss. :func:`optimize` runs the loop from a TOML config
(:class:`OptimizeConfig`, ``scripts/configs/optimize_qed.toml``) and writes to ``out``:

- ``optimize.csv``: one row per oracle call, in the order of the calls: ``step, oracle_call,
  smiles`` (canonical), ``score``, each component's raw value and desirability, ``scaffold``;
  whole steps are appended and flushed, so a kill loses at most the step in flight.
- ``steps.csv``: one row per step (calls used, valid, unique, new, best, top-10 mean, loss, ...).
- ``checkpoints/step-NNNNNN/``: the agent (a checkpoint folder: safetensors, loadable with
  ``molgen.load_pretrained``), Adam's state (safetensors) and ``state.json``, every
  ``checkpoint_every`` steps; ``checkpoints/latest.json`` names the newest, written last.
- ``agent/``: the final agent.

Resuming (``resume=True``) rebuilds the oracle's cache and call count from ``optimize.csv`` (no
molecule in it is scored or counted again), loads the agent and Adam from the newest checkpoint
(step ``s``), rebuilds the diversity filter and replay buffer from the rows of steps up to ``s``,
and runs on from step ``s + 1``. Every step samples with its own seed, so steps ``s + 1 ...`` that
the killed run had already done draw the same molecules again, now from the cache: on one
machine a resumed run writes the same ``optimize.csv`` as an uninterrupted one.

Scaffold-constrained optimisation (``scaffold = "c1ccc([*])cc1C(=O)N[*]"``): the agent samples with
the scaffold (:meth:`molgen.models.gpt.SmilesGPT.generate` with ``scaffold=``: its tokens forced, a
decoration sampled at each ``[*]``), and the augmented-likelihood loss uses the log-likelihood of the
sampled tokens only, for agent and prior alike (``sequence_log_prob(ids, mask=free)``): the forced
tokens are no choice of the agent's, and their likelihood would only add the prior's opinion of the
scaffold to every row (the decorative-RL setting of LibInvent, Fialková et al. 2022, J. Chem. Inf.
Model. 62:2046). Replayed molecules are replayed in the spelling the agent wrote (see
:meth:`_Run._encode`); ``optimize.csv`` gains ``contains_scaffold`` and ``sampled``.

The run stops when the budget is spent, after ``stop.max_steps``, or when sampling has collapsed:
over the last ``stop.window`` steps, under ``stop.min_new`` of the sampled molecules were new
(valid and never sampled before in this run). A collapsed agent would otherwise sample repeats,
which cost no oracle calls, for ever.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from molgen.chem import canonicalize, scaffold
from molgen.errors import ConfigError, InputError
from molgen.files import atomic_path, write_json
from molgen.guide.memory import DiversityFilter, ReplayBuffer
from molgen.guide.objectives import Objective, Oracle
from molgen.guide.runlog import (
    CSV_NAME,
    STEPS_NAME,
    append,
    begin,
    few_threads,
    interrupted,
    log_columns,
    new_rows,
    read_log,
    refuse_overwrite,
    restore_oracle,
    settings,
)
from molgen.guide.transforms import describe_error
from molgen.parallel import batch_seed

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["OptimizeConfig", "OptimizeResult", "rl_loss", "optimize"]

# --- configuration -------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> _Section:
        """Read and check a run file. ``objective`` (and ``prior`` / ``model`` when a folder there) are
        relative to the file's folder; ``out`` is relative to the current folder."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a folder: pass an optimize TOML file (scripts/configs/optimize_*.toml)") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a TOML text file (it is not UTF-8)") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
        base = path.resolve().parent
        if isinstance(data.get("objective"), str):
            data["objective"] = str(base / data["objective"])
        for key in ("prior", "model"):
            if isinstance(data.get(key), str) and (base / data[key] / "config.json").is_file():
                data[key] = str(base / data[key])
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data, source: str = "<config>") -> _Section:
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError("\n".join(f"{source}: {describe_error(e)}" for e in err.errors())) from None


class DiversityFilterConfig(_Section):
    enabled: bool = True
    bucket_size: int = Field(25, ge=1, description="molecules of one scaffold rewarded; the next ones get 0")
    min_score: float = Field(0.4, ge=0, le=1, description="score at which a molecule enters the filter's memory")


class ReplayConfig(_Section):
    size: int = Field(100, ge=0, description="best molecules kept")
    sample: int = Field(10, ge=0, description="replayed into each step's loss")


class StopConfig(_Section):
    window: int = Field(5, ge=1, description="steps over which the new fraction is averaged")
    min_new: float = Field(0.1, ge=0, le=1, description="stop when the new fraction falls below this")
    max_steps: int | None = Field(None, ge=1)


class OptimizeConfig(_Section):
    """One RL run (``molgen optimize --config FILE``); see ``scripts/configs/optimize_qed.toml``."""

    method: Literal["rl"] = Field("rl", description='"rl", or "latent" for molgen.guide.latent')
    prior: str = Field("smiles-gpt-moses-small", description="a SmilesGPT: shipped name or checkpoint folder")
    objective: Path = Field(description="objective TOML (molgen.guide.Objective.from_toml)")
    budget: int = Field(ge=1, description="oracle calls: distinct valid molecules scored")
    out: Path = Field(description="run folder")
    batch_size: int = Field(64, ge=2)
    sigma: float = Field(60.0, gt=0, description="weight of the score in the augmented likelihood")
    topk: float = Field(0.5, gt=0, le=1, description="fraction of each batch in the loss (AHC); 1 = REINVENT")
    lr: float = Field(1e-4, gt=0)
    seed: int = 0
    temperature: float = Field(1.0, gt=0)
    device: str = "auto"
    checkpoint_every: int = Field(5, ge=1)
    scaffold: str | None = Field(None, description='every molecule built on it: "c1ccc([*])cc1C(=O)N[*]"')
    diversity_filter: DiversityFilterConfig = DiversityFilterConfig()
    replay: ReplayConfig = ReplayConfig()
    stop: StopConfig = StopConfig()

    @field_validator("scaffold")
    @classmethod
    def _scaffold_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from molgen.models.scaffold import scaffold_mol

            try:
                scaffold_mol(value)
            except InputError as err:
                raise ValueError(str(err)) from None
        return value


# --- the loss ------------------------------------------------------------------------------------


def rl_loss(agent_logp: torch.Tensor, prior_logp: torch.Tensor, scores: torch.Tensor, sigma: float,
            topk: float = 1.0, n_replay: int = 0) -> torch.Tensor:  # fmt: skip
    """REINVENT's loss, with Augmented Hill-Climb's selection (see the module docstring).

    The last ``n_replay`` rows are replayed molecules: they always count; ``topk`` keeps the best
    ``ceil(topk * n)`` of the other ``n`` rows by score (ties: the earlier row).

    Shapes:
        agent_logp (with gradients), prior_logp, scores: (B,); returns a scalar.
    """
    augmented = prior_logp.detach() + sigma * scores.to(agent_logp.dtype)
    per = (agent_logp - augmented) ** 2  # (B,)
    n = per.numel() - n_replay
    if topk < 1.0 and n > 0:
        keep = torch.argsort(scores[:n], descending=True, stable=True)[: max(1, math.ceil(topk * n))]
        per = torch.cat([per[:n][keep], per[n:]])
    return per.mean()


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class OptimizeResult:
    """What a run leaves: its folder, the scored molecules (``optimize.csv``), the step log."""

    out: Path
    molecules: pd.DataFrame
    steps: pd.DataFrame
    stop_reason: str

    @property
    def calls_used(self) -> int:
        return len(self.molecules)

    def top(self, n: int = 10) -> pd.DataFrame:
        return self.molecules.sort_values("score", ascending=False, kind="stable").head(n)


class _Run:
    """The state of one run: models, optimiser, oracle, memories, files."""

    def __init__(self, cfg: OptimizeConfig, log: Callable[[str], None] | None):
        from molgen.models import load_pretrained
        from molgen.models.smiles_grammar import SmilesGrammar

        self.cfg, self.log = cfg, log or (lambda _: None)
        self.out = Path(cfg.out)
        self.objective = Objective.from_toml(cfg.objective)
        self.oracle = Oracle(self.objective, cfg.budget)
        torch.manual_seed(cfg.seed)
        self.prior = load_pretrained(cfg.prior, device=cfg.device)
        if getattr(self.prior, "model_type", None) != "gpt" or self.prior.config.cond_dim:
            raise ConfigError(f"prior {cfg.prior!r} must be an unconditional SmilesGPT")
        self.prior.eval().requires_grad_(False)
        self.agent = copy.deepcopy(self.prior).requires_grad_(True)
        self.agent.tokenizer = self.prior.tokenizer
        self.tok, self.dev = self.prior.tokenizer, self.prior.device
        self.grammar = SmilesGrammar(self.tok.itos, size=self.prior.config.vocab_size, aromatic=not self.tok.kekule)
        self.optim = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr)
        df = cfg.diversity_filter
        self.filter = DiversityFilter(df.bucket_size, df.min_score) if df.enabled else None
        self.replay = ReplayBuffer(cfg.replay.size)
        self.seen: set[str] = set()  # valid molecules sampled so far
        self.found: dict[str, float] = {}  # those scored, with their score: what the progress shows
        self.new_fraction: list[float] = []
        self.scaffolds: dict[str, str] = {}
        self.step = self.checkpointed = 0
        self.last_logged_step = 0  # the last step already in optimize.csv when the run (re)started
        self.template = self._template() if cfg.scaffold is not None else None
        self.spelling: dict[str, str] = {}  # scaffold runs: canonical SMILES -> the spelling first scored
        self.free_of: dict[str, tuple[list[int], list[bool]] | None] = {}  # spelling -> its tokens, which sampled
        self.columns = log_columns(self.objective, ("contains_scaffold", "sampled") if self.template else ())

    def _template(self):
        """The scaffold written in the prior's tokens, checked before anything is sampled."""
        from molgen.models.scaffold import ScaffoldTemplate

        try:
            template = ScaffoldTemplate.from_smiles(self.cfg.scaffold, self.tok)
        except InputError as err:
            raise ConfigError(f"scaffold: {err}") from None
        if len(template.ids) + 1 >= self.prior.config.block_size:  # <bos>, the forced tokens, a token a slot
            raise ConfigError(f"scaffold: {self.cfg.scaffold!r} takes {len(template.ids)} tokens, too many for "
                              f"{self.cfg.prior!r}'s context of {self.prior.config.block_size}")  # fmt: skip
        return template

    # -- one step ---------------------------------------------------------------------------------

    def sample(self, step: int):
        """One batch: ``<bos>``-led token rows, the sampled SMILES (``None`` when invalid), their
        canonical forms, and for a scaffold run which tokens were sampled (``None`` otherwise)."""
        gen = torch.Generator(device=self.dev).manual_seed(batch_seed(self.cfg.seed, step))
        self.agent.eval()
        free = None
        if self.template is None:
            ids, _, finished = self.agent.generate(self.cfg.batch_size, self.cfg.temperature, generator=gen,
                                                   grammar=self.grammar)  # fmt: skip
        else:
            ids, _, finished, free = self.agent.generate(self.cfg.batch_size, self.cfg.temperature, generator=gen,
                                                         grammar=self.grammar, scaffold=self.template,
                                                         return_free=True)  # fmt: skip
        raw = self.tok.decode_batch(ids.cpu().numpy())
        # a row cut at the context is invalid even when its start parses
        canon = [canonicalize(s) if ok else None for s, ok in zip(raw, finished.tolist(), strict=True)]
        raw = [s if c is not None else None for s, c in zip(raw, canon, strict=True)]
        seq = torch.cat([torch.full((len(ids), 1), self.prior.config.bos_id, device=self.dev), ids], 1)
        length = int((seq != self.prior.config.pad_id).sum(1).max())
        if free is not None:
            free = torch.cat([torch.zeros((len(ids), 1), dtype=torch.bool, device=self.dev), free], 1)[:, :length]
        return seq[:, :length], raw, canon, free

    def score(self, raw: list[str | None], canon: list[str | None]) -> pd.DataFrame:
        # the sampled spelling goes in: the oracle's key is canonicalize(raw), the very string in `canon`
        if self.oracle.exhausted:  # nothing new can be scored: cached molecules keep their scores
            table = self.oracle([r if c in self.oracle.cache else None for r, c in zip(raw, canon, strict=True)])
            unscored = np.array([c is not None and c not in self.oracle.cache for c in canon])
            table.loc[unscored, "valid"], table.loc[unscored, "scored"] = True, False
            table.loc[unscored, self.objective.columns] = np.nan
            return table
        return self.oracle(raw)

    def scaffold_of(self, smi: str) -> str:
        if smi not in self.scaffolds:
            self.scaffolds[smi] = scaffold(smi) or ""
        return self.scaffolds[smi]

    def remember(self, canon: list[str | None], scores: np.ndarray) -> np.ndarray:
        """Rewards through the diversity filter; the replay buffer and the seen set updated."""
        scaffolds = [None if c is None else self.scaffold_of(c) for c in canon]
        rewards = self.filter(canon, scaffolds, scores) if self.filter else np.nan_to_num(scores, nan=0.0)
        self.replay.add(canon, rewards)
        first = [c for c in dict.fromkeys(canon) if c is not None and c not in self.seen]
        self.new_fraction.append(len(first) / len(canon))
        self.seen.update(first)
        self.found.update((c, self.oracle.cache[c][0]) for c in first if c in self.oracle.cache)
        return rewards

    def train(self, seq: torch.Tensor, rewards: np.ndarray, step: int, free: torch.Tensor | None = None) -> float:
        """One Adam step on :func:`rl_loss`; ``free`` (a scaffold run) limits both log-likelihoods to
        the sampled tokens: the forced scaffold tokens are no choice of the agent's."""
        rng = np.random.default_rng([self.cfg.seed, step])
        replay, replay_rewards = self.replay.sample(self.cfg.replay.sample, rng)
        ids, keep, replay_free = self._encode(replay)
        self.agent.train()
        agent_logp = self.agent.sequence_log_prob(seq, mask=free)
        with torch.no_grad():
            prior_logp = self.prior.sequence_log_prob(seq, mask=free)
        scores = torch.as_tensor(rewards, dtype=torch.float32, device=self.dev)
        if ids is not None:
            agent_logp = torch.cat([agent_logp, self.agent.sequence_log_prob(ids, mask=replay_free)])
            with torch.no_grad():
                prior_logp = torch.cat([prior_logp, self.prior.sequence_log_prob(ids, mask=replay_free)])
            scores = torch.cat([scores, torch.as_tensor(replay_rewards[keep], dtype=torch.float32, device=self.dev)])
        loss = rl_loss(agent_logp, prior_logp, scores, self.cfg.sigma, self.cfg.topk, n_replay=len(keep))
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        return float(loss.detach())

    def _encode(self, smiles: list[str]):
        """Replayed molecules as ``<bos>``-led token rows, the indices of those kept, and for a scaffold
        run their free-token masks.

        A plain run replays the canonical spelling. A scaffold run replays the spelling the agent
        wrote when the molecule was first scored (``sampled`` in ``optimize.csv``): its forced/free
        split is recomputed by walking its tokens through the scaffold template
        (:meth:`_free_tokens`), the very masks :meth:`SmilesGPT.generate` applied, so a replayed row
        counts exactly the tokens that were sampled. The canonical spelling would not do: it seldom
        starts with the scaffold's tokens, so it has no forced/free split, and its full likelihood
        would train the agent on tokens it never chooses under the constraint. Keeping the spelling
        (not a stored mask) in the CSV lets a resumed run rebuild the replay exactly from the file.
        """
        rows, keep, frees = [], [], []
        for i, s in enumerate(smiles):
            if self.template is not None:
                walked = self._free_tokens(self.spelling.get(s))
                if walked is None:  # no spelling on record or not the template's: not replayed
                    continue
                ids, free = walked
            else:
                try:
                    ids = self.tok.encode(s)
                except InputError:  # a canonical spelling the vocabulary lacks: not replayed
                    continue
                free = None
            if len(ids) <= self.prior.config.block_size:
                rows.append(ids)
                keep.append(i)
                frees.append(free)
        if not rows:
            return None, [], None
        out = np.full((len(rows), max(map(len, rows))), self.prior.config.pad_id, dtype=np.int64)
        mask = np.zeros(out.shape, dtype=bool)
        for r, ids in enumerate(rows):
            out[r, : len(ids)] = ids
            if frees[r] is not None:
                mask[r, 1 : len(ids)] = frees[r]
        mask_t = torch.as_tensor(mask, device=self.dev) if self.template is not None else None
        return torch.as_tensor(out, device=self.dev), keep, mask_t

    def _free_tokens(self, spelling: str | None) -> tuple[list[int], list[bool]] | None:
        """A scaffold run's spelling as ``<bos>``-led token ids and, per token after ``<bos>``, whether
        it was sampled: the template's masks (:class:`molgen.models.scaffold.ScaffoldState`) replayed
        over the tokens; ``None`` when the spelling does not follow the template."""
        if spelling is None:
            return None
        if spelling not in self.free_of:
            self.free_of[spelling] = self._walk(spelling)
        return self.free_of[spelling]

    def _walk(self, spelling: str) -> tuple[list[int], list[bool]] | None:
        from molgen.tokenize import tokenize

        try:  # the spelling as written (encode would re-spell it through RDKit)
            ids = [self.tok.bos_id, *(self.tok.stoi[t] for t in tokenize(spelling)), self.tok.eos_id]
        except (KeyError, InputError):
            return None
        body, head = ids[1:], list(self.template.head)
        if body[: len(head)] != head or body[-1] != self.tok.eos_id:
            return None
        syntax = self.grammar.start(1, "cpu", self.prior.config.block_size)
        slots = self.template.start(self.grammar, 1, "cpu")
        for t in head:
            syntax.update(torch.tensor([t]))
        free = [False] * len(head)
        for t in body[len(head) :]:
            allowed, forced, forced_tok = slots.mask(syntax, syntax.mask())
            if bool(forced[0]) and int(forced_tok[0]) != t or not bool(forced[0]) and not bool(allowed[0, t]):
                return None
            free.append(not bool(forced[0]))
            depth = syntax.depth.clone()
            syntax.update(torch.tensor([t]))
            slots.update(torch.tensor([t]), depth, syntax)
        return ids, free

    # -- files ------------------------------------------------------------------------------------

    def append_rows(self, table: pd.DataFrame, canon: list[str | None], step: int, calls_before: int,
                    raw: list[str | None] | None = None) -> None:  # fmt: skip
        extra = None
        if self.template is not None:
            from molgen.models.scaffold import contains_scaffold

            extra = {"contains_scaffold": contains_scaffold(canon, self.cfg.scaffold), "sampled": raw}
        rows = new_rows(table, canon, step, calls_before, self.objective, self.scaffold_of, extra)
        if self.template is not None:
            self.spelling.update(zip(rows["smiles"], rows["sampled"], strict=True))
        if len(rows):
            append(self.out / CSV_NAME, rows, self.columns)

    def checkpoint(self, step: int) -> None:
        from safetensors.torch import save_file

        folder = self.out / "checkpoints" / f"step-{step:06d}"
        self.checkpointed = step
        self.save_agent(folder, step)
        sd = self.optim.state_dict()
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items() for k, v in st.items()}
        with atomic_path(folder / "optimizer.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(folder / "state.json", {"step": step, "calls_used": self.oracle.calls_used,
                                           "param_groups": sd["param_groups"]})  # fmt: skip
        write_json(self.out / "checkpoints" / "latest.json", {"step": step, "folder": folder.name})
        for old in (self.out / "checkpoints").glob("step-*"):  # the pointer moved: older ones can go
            if old.name != folder.name and old.is_dir():
                for f in old.iterdir():
                    f.unlink()
                old.rmdir()

    def save_agent(self, folder: Path, step: int) -> None:
        from molgen.models.hub import save_pretrained

        prov = {"parent": self.cfg.prior, "task": "rl", "objective": str(self.cfg.objective), "step": step,
                "oracle_calls": self.oracle.calls_used, "seed": self.cfg.seed}  # fmt: skip
        card = (f"# RL agent, step {step}\n\nFine-tuned from `{self.cfg.prior}` by molgen optimize "
                f"(REINVENT / Augmented Hill-Climb) against `{self.cfg.objective}` after "
                f"{self.oracle.calls_used} oracle calls. Its molecules are biased toward that objective.\n")
        save_pretrained(self.agent, folder, provenance=prov, card=card)

    def load_checkpoint(self) -> int:
        from safetensors.torch import load_file
        from safetensors.torch import load_model as load_weights

        latest = self.out / "checkpoints" / "latest.json"
        if not latest.is_file():
            return 0
        pointer = json.loads(latest.read_text())
        folder = self.out / "checkpoints" / pointer["folder"]
        load_weights(self.agent, str(folder / "model.safetensors"), strict=True, device=str(self.dev))
        state = json.loads((folder / "state.json").read_text())
        flat = load_file(str(folder / "optimizer.safetensors"), device=str(self.dev))
        per: dict[int, dict] = {}
        for key, value in flat.items():
            i, name = key.split(".", 1)
            per.setdefault(int(i), {})[name] = value.cpu() if name == "step" else value
        self.optim.load_state_dict({"state": per, "param_groups": state["param_groups"]})
        return int(pointer["step"])

    # -- resuming ---------------------------------------------------------------------------------

    def restore(self) -> None:
        rows = restore_oracle(self.oracle, self.out, self.columns, self.scaffolds)
        if self.template is not None:  # every scored molecule's spelling, as the killed run had them
            self.spelling.update(zip(rows["smiles"], rows["sampled"], strict=True))
        self.step = self.checkpointed = self.load_checkpoint()
        self.last_logged_step = int(rows["step"].max()) if len(rows) else 0
        # the memories as they were after step `self.step`: its rows, in oracle order, step by step
        done = rows[rows["step"] <= self.step]
        by_step = dict(tuple(done.groupby("step", sort=True)))
        for step in range(1, self.step + 1):
            part = by_step.get(step)
            canon = [] if part is None else part["smiles"].tolist()
            if self.filter is not None and canon:
                self.replay.add(canon, self.filter(canon, part["scaffold"].tolist(), part["score"].to_numpy()))
            elif canon:
                self.replay.add(canon, np.nan_to_num(part["score"].to_numpy(), nan=0.0))
            self.new_fraction.append(len(canon) / self.cfg.batch_size)
            self.seen.update(canon)
            if canon:
                self.found.update(zip(canon, part["score"].to_numpy(np.float64), strict=True))
        steps = self.out / STEPS_NAME
        if steps.is_file():
            kept = pd.read_csv(steps)
            kept = kept[kept["step"] <= self.step]
            with atomic_path(steps) as tmp:
                kept.to_csv(tmp, index=False)
        self.log(f"resuming at step {self.step + 1}: {len(rows):,} molecules already scored "
                 f"({self.oracle.remaining:,} calls left), agent from step {self.step}")


def optimize(config: OptimizeConfig | dict | str | os.PathLike, resume: bool = False,
             log: Callable[[str], None] | None = print) -> OptimizeResult:  # fmt: skip
    """Run RL against the prior until the budget is spent or sampling collapses (module docstring).

    Args:
        config: an :class:`OptimizeConfig`, its dict, or a TOML path.
        resume: continue the run in ``config.out`` (a missing run starts afresh).
        log: called with one progress line per step; ``None`` for silence.

    Raises:
        ConfigError: a bad config, or ``out`` holds a run and ``resume`` is False, or a run with
            other settings (only ``budget``, ``stop``, ``device`` and ``checkpoint_every`` may change).
    """
    if _method(config) == "latent":  # the same command and files, CMA-ES in the graph-VAE's latent space
        from molgen.guide.latent import optimize_latent

        return optimize_latent(config, resume=resume, log=log)
    cfg = OptimizeConfig.from_toml(config) if isinstance(config, (str, os.PathLike)) else OptimizeConfig.parse(config)
    out = Path(cfg.out)
    csv = out / CSV_NAME
    refuse_overwrite(out, resume)
    run = _Run(cfg, log)
    begin(out, run.columns, settings(cfg, run.objective), resume, _MAY_CHANGE, run.restore,
          stale=(out / STEPS_NAME, out / "checkpoints" / "latest.json"))
    try:
        with few_threads():
            reason = _loop(run)
    except KeyboardInterrupt:
        raise interrupted(run.step + 1, run.oracle.calls_used, out) from None
    if run.checkpointed != run.step:
        run.checkpoint(run.step)
    run.save_agent(out / "agent", run.step)
    molecules = read_log(csv, run.columns)
    steps = pd.read_csv(out / STEPS_NAME) if (out / STEPS_NAME).is_file() else pd.DataFrame()
    run.log(f"stopped after step {run.step}: {reason}; {len(molecules):,} molecules in {csv}, agent in {out / 'agent'}")
    return OptimizeResult(out, molecules, steps, reason)


def _method(config) -> str:
    """The ``method`` a config names (``"rl"`` when it names none); a bad file is left to the config's reader."""
    if isinstance(config, (str, os.PathLike)):
        try:
            config = tomllib.loads(Path(config).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return "rl"
    if isinstance(config, BaseModel):
        return getattr(config, "method", "rl")
    return config.get("method", "rl") if isinstance(config, dict) else "rl"


def _loop(run: _Run) -> str:
    cfg = run.cfg
    while True:
        # checked before each step, so a resumed run that had already stopped stops again at once
        if run.oracle.exhausted and run.step >= run.last_logged_step:
            return f"budget of {cfg.budget:,} oracle calls spent"
        recent = run.new_fraction[-cfg.stop.window:]
        if len(recent) == cfg.stop.window and np.mean(recent) < cfg.stop.min_new:
            return (f"sampling collapsed: {np.mean(recent):.1%} of the molecules of the last {cfg.stop.window} "
                    f"steps were new (stop.min_new = {cfg.stop.min_new:g})")
        if cfg.stop.max_steps is not None and run.step >= cfg.stop.max_steps:
            return f"max_steps ({cfg.stop.max_steps}) reached"
        step, start = run.step + 1, time.perf_counter()
        seq, raw, canon, free = run.sample(step)
        calls_before = run.oracle.calls_used
        table = run.score(raw, canon)
        run.append_rows(table, canon, step, calls_before, raw)
        rewards = run.remember(canon, table["score"].to_numpy(np.float64))
        loss = run.train(seq, rewards, step, free)
        run.step = step
        _log_step(run, step, canon, table, loss, time.perf_counter() - start)
        if step % cfg.checkpoint_every == 0:
            run.checkpoint(step)


def _log_step(run: _Run, step: int, canon, table: pd.DataFrame, loss: float, seconds: float) -> None:
    # from the molecules this run has sampled up to this step (a resumed run's cache also holds
    # the rows of the steps it is redoing), so steps.csv reads the same with or without a kill
    top = np.sort(np.fromiter(run.found.values(), np.float64, len(run.found)))[::-1]
    valid = [c for c in canon if c is not None]
    batch_scores = table.loc[table["scored"], "score"].to_numpy(np.float64)  # past the budget: left out
    n_scaffolds = len({run.scaffolds.get(s, "") for s in run.found})
    rec = {"step": step, "calls_used": len(run.found), "valid": len(valid) / len(canon),
           "unique": len(set(valid)) / len(canon), "new": run.new_fraction[-1], "mean_score": batch_scores.mean() if len(batch_scores) else math.nan,
           "best": top[0] if len(top) else math.nan, "top10_mean": top[:10].mean() if len(top) else math.nan,
           "scaffolds": n_scaffolds, "loss": loss, "seconds": round(seconds, 3)}  # fmt: skip
    append(run.out / STEPS_NAME, pd.DataFrame([rec]), list(rec), header=not (run.out / STEPS_NAME).exists())
    budget = f"{len(run.found):,}/{run.cfg.budget:,}"
    run.log(f"step {step:4d}  calls {budget}  best {rec['best']:.3f}  top-10 {rec['top10_mean']:.3f}  "
            f"batch {rec['mean_score']:.3f}  valid {rec['valid']:.0%}  unique {rec['unique']:.0%}  "
            f"new {rec['new']:.0%}  scaffolds {n_scaffolds:,}  loss {loss:.1f}  {seconds:.1f} s")


_MAY_CHANGE = ("budget", "stop", "device", "checkpoint_every", "out")
