"""Run configs: one TOML file per run, checked by pydantic (unknown keys are errors).

``model_type`` at the top of the file picks the config class from :data:`RUN_CONFIGS`, so one
``molgen pretrain --config X.toml`` serves every model. Sections shared by all models
(``[data]``, ``[optim]``, ``[trainer]``) are defined once here; each model adds its ``[model]``
section and registers its run config in :data:`RUN_CONFIGS`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molgen.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "Section",
    "DataConfig",
    "OptimConfig",
    "TrainerConfig",
    "GPTModelConfig",
    "GPTRunConfig",
    "GraphVAEModelConfig",
    "GraphVAERunConfig",
    "RUN_CONFIGS",
    "load_config",
    "parse_config",
]


class Section(BaseModel):
    """A config table: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: str = Field("moses", description="'moses' or a .csv/.smi/.parquet file with a SMILES column")
    split: str = Field("train", description="MOSES split to train on")
    val_split: str = Field("test", description="MOSES split for validation NLL")
    val_size: int = Field(10_000, ge=1, description="validation subsample (seeded) of val_split, for speed")
    limit: int | None = Field(None, ge=1, description="train on the first `limit` molecules only (tiny runs)")
    augment: float = Field(0.0, ge=0.0, le=1.0, description="probability of a randomised SMILES per sample")
    kekule: bool | None = Field(
        None,
        description="GPT: write SMILES in Kekulé form (no aromatic atoms); None keeps the parent's form, aromatic from scratch",
    )
    num_workers: int = Field(0, ge=0)


class OptimConfig(Section):
    lr: float = Field(6e-4, gt=0)
    min_lr: float = Field(6e-5, ge=0, description="end of the cosine decay")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(500, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")


class TrainerConfig(Section):
    max_steps: int = Field(..., ge=1, description="optimizer steps; the cosine schedule ends here")
    max_minutes: float | None = Field(None, gt=0, description="stop after this much training time (kept across resumes)")
    batch_size: int = Field(256, ge=1, description="molecules per step per device")
    val_every_steps: int = Field(1000, ge=1)
    checkpoint_minutes: float = Field(5.0, gt=0, description="save a resumable checkpoint this often")
    export_on_checkpoint: bool = Field(True, description="also refresh the shippable folder at each checkpoint")
    log_every_steps: int = Field(50, ge=1)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="Lightning strategy, e.g. 'ddp' for torchrun")
    precision: str = Field("auto", description="'auto' = bf16-mixed on CUDA, 32-true on CPU")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads")
    progress_bar: bool = True
    seed: int = 0


class RunConfig(Section):
    """What every model's run config has besides its ``[model]`` section."""

    name: str
    run_dir: str | None = Field(None, description="checkpoints and logs; default runs/<name>")
    export_dir: str | None = Field(None, description="shippable folder; default <run_dir>/export")
    init_from: str | None = Field(None, description="parent checkpoint (name or folder) to start from")
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig

    @model_validator(mode="after")
    def _default_dirs(self):
        if self.run_dir is None:
            self.run_dir = str(Path("runs") / self.name)
        if self.export_dir is None:
            self.export_dir = str(Path(self.run_dir) / "export")
        return self


class GPTModelConfig(Section):
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(256, ge=8)
    n_kv_head: int | None = Field(None, ge=1, description="key/value heads shared by groups of query heads; None = n_head")
    block_size: int = Field(128, ge=8, description="longest SMILES in tokens, <bos> and <eos> included")
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = True
    cond_dim: int = Field(0, ge=0)


class DistillConfig(Section):
    """Knowledge distillation (Hinton et al. 2015): the model being trained also matches a frozen
    teacher's next-token distributions. The student takes the teacher's vocabulary and SMILES form."""

    teacher: str | None = Field(None, description="teacher checkpoint (name or folder); None = no distillation")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets; 1 - alpha on the data's tokens")
    temperature: float = Field(1.0, gt=0, description="softens both distributions; the soft loss is scaled by T^2")


class GPTRunConfig(RunConfig):
    model_type: Literal["gpt"]
    model: GPTModelConfig = GPTModelConfig()
    distill: DistillConfig = DistillConfig()


class GraphVAEModelConfig(Section):
    latent: int = Field(56, ge=1)
    hidden: int = Field(256, ge=8, description="encoder width")
    enc_layers: int = Field(5, ge=1)
    dec_hidden: int = Field(384, ge=8, description="decoder GRU width")
    dec_layers: int = Field(2, ge=1)
    window: int = Field(12, ge=1, description="bonds span at most this many atoms in BFS order")
    max_atoms: int = Field(38, ge=2)
    dropout: float = Field(0.0, ge=0, lt=1)
    beta: float = Field(1.0, ge=0, description="KL weight after annealing")
    kl_anneal_steps: int = Field(5000, ge=0, description="linear KL warm-up from 0 to beta")
    free_bits: float = Field(0.0, ge=0, description="nats per latent dimension not penalised")


class GraphVAERunConfig(RunConfig):
    model_type: Literal["graph_vae"]
    model: GraphVAEModelConfig = GraphVAEModelConfig()


# model_type -> run config class; each model adds its own here
RUN_CONFIGS: dict[str, type[RunConfig]] = {"gpt": GPTRunConfig, "graph_vae": GraphVAERunConfig}


def parse_config(data: dict, source: str = "<config>") -> RunConfig:
    """Validate a config dict; ``source`` (e.g. the file name) starts every error message."""
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in RUN_CONFIGS:
        raise ConfigError(
            f"{source}: model_type must be one of {sorted(RUN_CONFIGS)} at the top of the file, got {model_type!r}"
        )
    try:
        return RUN_CONFIGS[model_type].model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in err.errors())) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a run config TOML file.

    Raises:
        ConfigError: the path is missing, a folder, unreadable, not a UTF-8 TOML text, or its content
            does not fit the run config; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "config.toml"
        hint = f"; a run folder keeps its config as {inside}" if inside.is_file() else ""
        raise ConfigError(f"--config {path} is a folder: pass a run config TOML file (scripts/configs/*.toml){hint}")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a TOML text file (it is not UTF-8); pass a run config such as scripts/configs/*.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return parse_config(data, str(path))


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r} (check the spelling)"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"
