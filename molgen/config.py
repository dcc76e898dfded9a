"""Run configs: one TOML file per run, checked by pydantic (unknown keys are errors).

A run config is a model type x a task. ``model_type`` at the top of the file picks the model's run
config, registered with its training task in :mod:`molgen.train` (``register_task``); ``task`` says
what the run does: ``pretrain`` (random weights), ``finetune`` (from ``init_from``) or ``distill``
(``[distill] teacher``). A file without ``task`` gets the one its content implies, so older files
keep loading; one that says otherwise is refused. Sections shared by all models (``[data]``,
``[optim]``, ``[trainer]``, ``[distill]``) are defined once here, and :func:`model_section` derives a
model's ``[model]`` table from its config dataclass, so the shape of a model is written only there.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from molgen.errors import ConfigError
from molgen.files import read_toml

__all__ = [
    "Section",
    "DataConfig",
    "OptimConfig",
    "TrainerConfig",
    "DistillConfig",
    "FinetuneConfig",
    "ConditionConfig",
    "RunConfig",
    "ModelSection",
    "model_section",
    "TASKS",
    "load_config",
    "parse_config",
]


class Section(BaseModel):
    """A config table: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: str = Field(
        "moses", description="'moses', a .csv/.smi/.sdf/.parquet file with a SMILES column, or (GPT) a named data set of molgen.datasets"
    )
    split: str = Field("train", description="MOSES split to train on")
    val_split: str = Field("test", description="MOSES split for validation NLL")
    val_size: int = Field(10_000, ge=1, description="validation subsample (seeded) of val_split, for speed")
    val_fraction: float = Field(
        0.05, gt=0, lt=1, description="a file's training molecules held out (seeded) for validation, at most val_size"
    )
    limit: int | None = Field(None, ge=1, description="train on the first `limit` molecules only (tiny runs)")
    augment: float | None = Field(
        None, ge=0.0, le=1.0,
        description="probability of a randomised SMILES per sample; None: 0.5 when fine-tuning on fewer than 1,000 molecules, else 0",
    )
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
    patience: int | None = Field(
        None, ge=1,
        description="early stopping: stop after this many validations without val_nll improving by min_delta, and "
        "export the best validation's weights; None = train to max_steps",
    )
    min_delta: float = Field(0.0, ge=0, description="the least fall of val_nll that counts as an improvement")


#: what a run does: start from random weights, from a parent checkpoint (``init_from``), or learn
#: from a teacher (``[distill]``)
TASKS = ("pretrain", "finetune", "distill")
# names kept for the next wings, refused until they exist
_LATER = {"property": "property-head training", "rl": "reinforcement learning against the prior"}


class DistillConfig(Section):
    """Knowledge distillation (Hinton et al. 2015): the model being trained also matches a frozen
    teacher's next-token distributions. The student takes the teacher's vocabulary and SMILES form."""

    teacher: str | None = Field(None, description="teacher checkpoint (name or folder); None = no distillation")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets; 1 - alpha on the data's tokens")
    temperature: float = Field(1.0, gt=0, description="softens both distributions; the soft loss is scaled by T^2")


class FinetuneConfig(Section):
    """How a parent (``init_from``) is adapted: which parts stay frozen (or LoRA adapters), its dropout,
    its context, what keeps it from forgetting MOSES (rehearsal, an L2-SP/EWC anchor), and the target
    split that ``molgen finetune`` reports on (:mod:`molgen.finetune`)."""

    freeze: str = Field("none", description="none | first_k | head_only | encoder | lora (molgen.train.freeze.FreezePolicy)")
    k: int | None = Field(None, ge=0, description="with freeze = 'first_k': how many of the first layers stay frozen")
    dropout: float | None = Field(None, ge=0, lt=1, description="the parent's dropout during fine-tuning; None keeps it")
    max_block_size: int = Field(
        256, ge=8,
        description="GPT: the context is extended to fit the longest training molecule up to this many tokens; "
        "longer molecules are skipped and counted",
    )
    context_positions: Literal["interpolate", "mean"] = Field(
        "interpolate",
        description="GPT, when the context grows: 'interpolate' stretches the learnt position rows over the new "
        "table (every row changes and trains); 'mean' keeps them and starts the new rows at their mean "
        "(SmilesGPT.extend_context)",
    )
    n_train: int | None = Field(
        None, ge=2,
        description="train on a seeded n_train molecules of the data (validation taken from them) and hold out the "
        "rest for molgen finetune's report; None = all",
    )
    eval_samples: int = Field(1000, ge=10, description="molgen finetune: molecules sampled before and after for the report")
    lora_r: int = Field(8, ge=1, description="freeze = 'lora': the adapters' rank")
    lora_alpha: float = Field(16.0, gt=0, description="freeze = 'lora': the update is lora_alpha / lora_r * B @ A")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="freeze = 'lora': dropout on the adapters' input")
    lora_dora: bool = Field(False, description="freeze = 'lora': weight-decomposed adapters (DoRA, Liu et al. 2024)")
    lora_targets: list[str] = Field(
        ["c_attn", "c_proj", "c_fc"], min_length=1,
        description="freeze = 'lora': the linear layers adapted, by name (GPT: attention c_attn/c_proj, MLP c_fc/c_proj)",
    )
    rehearsal: float = Field(
        0.0, ge=0, lt=1,
        description="GPT: this share of every training batch is MOSES train molecules (seeded), against forgetting",
    )
    rehearsal_tag: bool = Field(
        False,
        description="GPT, with rehearsal: the MOSES rows carry a condition 'moses' = 1 that the target rows leave "
        "unset, so the child samples the target set by default and MOSES when asked (condition={'moses': 1})",
    )
    anchor: Literal["l2sp", "ewc"] | None = Field(
        None,
        description="pull the weights towards the parent's: 'l2sp' (Li et al. 2018) or 'ewc' (Kirkpatrick et al. "
        "2017, diagonal Fisher from MOSES train); None = no anchor",
    )
    anchor_weight: float = Field(0.01, gt=0, description="the anchor's weight: loss + anchor_weight / 2 * sum F (w - w0)^2")
    fisher_molecules: int = Field(256, ge=1, description="anchor = 'ewc': MOSES train molecules for the Fisher estimate")
    forgetting_molecules: int = Field(
        2000, ge=0,
        description="molgen finetune: seeded MOSES test molecules scored before and after (NLL), with the samples' "
        "FCD to MOSES test: what the parent's skill the run forgot; 0 = skip",
    )
    weight_by: str | None = Field(
        None,
        description="property-guided fine-tuning: a column of the data with a measured property; training molecules "
        "with better values are drawn more often (molgen.data.property_weights); None = uniform",
    )
    weight_direction: Literal["max", "min"] = Field("max", description="with weight_by: which values are better")
    weight_scheme: Literal["rank", "softmax"] = Field(
        "rank", description="with weight_by: 'rank' (w ~ 1 / (k N + rank), Tripp et al. 2020) or 'softmax' (w ~ exp(z / T))"
    )
    weight_k: float = Field(0.1, gt=0, description="weight_scheme = 'rank': small k favours the best few, large k is near uniform")
    weight_temperature: float = Field(1.0, gt=0, description="weight_scheme = 'softmax': temperature on the standardised values")
    property_model: str | None = Field(
        None,
        description="molgen finetune: a saved PropertyModel folder (molgen fit-property) that predicts the property of "
        "the samples before and after; None with weight_by: a GP on graph-VAE features fitted to the training molecules",
    )
    iterate: int = Field(
        0, ge=0,
        description="molgen finetune: after fine-tuning, this many rounds of fine-tuning on the model's own samples ranked "
        "by the property model (property_model, or the GP that weight_by fits); 0 = none",
    )
    iterate_samples: int = Field(1000, ge=10, description="with iterate: molecules sampled each round")
    iterate_top: float = Field(0.2, gt=0, le=1, description="with iterate: the best share of a round's new valid samples trained on")

    @model_validator(mode="after")
    def _options_fit(self):
        stray = sorted(k for k in self.model_fields_set if k.startswith("lora_")) if self.freeze != "lora" else []
        if stray:
            raise ValueError(f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} for freeze = 'lora', not {self.freeze!r}")
        weighting = sorted(k for k in self.model_fields_set if k.startswith("weight_") and k != "weight_by")
        if weighting and self.weight_by is None:
            raise ValueError(f"{', '.join(weighting)} need{'s' if len(weighting) == 1 else ''} weight_by, the property column")
        if self.iterate and not (self.weight_by or self.property_model):
            raise ValueError("iterate ranks the model's samples by a property model: set property_model, or weight_by "
                             "(a GP is fitted to the training molecules)")  # fmt: skip
        if self.iterate and self.freeze == "lora":
            raise ValueError("iterate fine-tunes each round's model further, which a LoRA adapter run does not do; "
                             "use freeze = 'none', 'first_k' or 'head_only'")  # fmt: skip
        if self.anchor is not None and self.freeze == "lora":
            raise ValueError("anchor keeps the parent's weights close, but freeze = 'lora' keeps them exactly (the adapter "
                             "is the change); use rehearsal with LoRA, or another freeze policy with the anchor")  # fmt: skip
        if self.anchor is None and {"anchor_weight", "fisher_molecules"} & self.model_fields_set:
            raise ValueError("anchor_weight and fisher_molecules need anchor = 'l2sp' or 'ewc'")
        return self


class ConditionConfig(Section):
    """Conditional training (GPT): properties of each training molecule, standardised by the training
    set's mean and std (stored in the model's config, so that callers give raw values), feed the model
    with every row, and ``molgen.sample(model, n, condition={...})`` asks for values. A property is an
    RDKit one computed from the molecule (``molgen.data.CONDITION_PROPERTIES``) or a numeric column of
    the ``[data]`` file: a measured value, or a fitted PropertyModel's prediction written by
    ``molgen predict``. A parent without a condition gets one that starts as a no-op
    (``SmilesGPT.add_condition``)."""

    properties: list[str] = Field(
        [], description="properties to condition on: RDKit's logp, qed, tpsa, mw (molgen.data.CONDITION_PROPERTIES), "
        "or numeric columns of the [data] file (e.g. a PropertyModel's prediction from molgen predict); [] = unconditional",
    )
    drop: float = Field(
        0.5, ge=0, lt=1,
        description="each property is left out of a training row's condition with this chance (its 'given' flag "
        "0), so a caller may ask for only some; 0 = always all, and sampling then needs every property",
    )
    n_jobs: int = Field(1, ge=1, description="processes that compute the training molecules' properties (cached once)")

    @field_validator("properties")
    @classmethod
    def _named(cls, properties: list[str]) -> list[str]:
        if any(not p.strip() for p in properties):
            raise ValueError(f"every property needs a name: {properties}")
        if len(set(properties)) < len(properties):
            raise ValueError(f"a property is named twice in {properties}")
        return properties


class RunConfig(Section):
    """What every model's run config has besides its ``[model]`` section (each model's subclass,
    registered in :mod:`molgen.train`, narrows ``model_type`` and adds ``model``)."""

    model_type: str
    name: str
    task: str | None = Field(None, description="pretrain | finetune | distill; left out: the one the content implies")
    run_dir: str | None = Field(None, description="checkpoints and logs; default runs/<name>")
    export_dir: str | None = Field(None, description="shippable folder; default <run_dir>/export")
    init_from: str | None = Field(None, description="parent checkpoint (name or folder) to start from")
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig
    finetune: FinetuneConfig = FinetuneConfig()

    def teacher(self) -> str | None:
        """The checkpoint this run distils from; ``None`` for models without a ``[distill]`` section."""
        return None

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str | None) -> str | None:
        if task is None or task in TASKS:
            return task
        if task in _LATER:
            raise ValueError(f"{task!r} is not available yet ({_LATER[task]} comes later); "
                             f"this molgen trains {', '.join(TASKS)}")  # fmt: skip
        raise ValueError(f"must be one of {', '.join(TASKS)}, got {task!r}")

    @model_validator(mode="after")
    def _task_fits(self):
        teacher = self.teacher()
        implied = "distill" if teacher else "finetune" if self.init_from else "pretrain"
        if self.task is None:  # a file from before the task axis
            self.task = implied
        elif self.task == "pretrain" and implied != "pretrain":
            has = f"distill.teacher = {teacher!r}" if teacher else f"init_from = {self.init_from!r}"
            raise ValueError(f"task = 'pretrain' starts from random weights, but the config has {has}: "
                             f"set task = {implied!r} or remove it")  # fmt: skip
        elif self.task == "finetune" and teacher:
            raise ValueError(f"task = 'finetune', but the config has distill.teacher = {teacher!r}: that is "
                             "task = 'distill' (a student may also start from init_from)")  # fmt: skip
        elif self.task == "finetune" and not self.init_from:
            raise ValueError("task = 'finetune' needs init_from, the checkpoint (name or folder) to start from")
        elif self.task == "distill" and not teacher:
            raise ValueError("task = 'distill' needs distill.teacher, the checkpoint (name or folder) to learn from")
        if self.finetune.freeze != "none" and not self.init_from:
            raise ValueError(f"finetune.freeze = {self.finetune.freeze!r} keeps a parent's layers: it needs init_from")
        ft = self.finetune
        kept = [k for k, on in (("rehearsal", ft.rehearsal), ("anchor", ft.anchor)) if on]
        if kept and (not self.init_from or self.model_type != "gpt"):
            raise ValueError(f"finetune.{kept[0]} keeps a parent's skill while fine-tuning a GPT: it needs "
                             f"model_type = 'gpt' and init_from")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _default_dirs(self):
        if self.run_dir is None:
            self.run_dir = str(Path("runs") / self.name)
        if self.export_dir is None:
            self.export_dir = str(Path(self.run_dir) / "export")
        return self


class ModelSection(Section):
    """A run config's ``[model]`` table, made by :func:`model_section` from a model's config dataclass.

    A subclass passed as ``base`` adds training-only keys (e.g. the graph-VAE's KL weight), which
    :meth:`shape` leaves out.
    """

    shape_class: ClassVar[type]
    set_by_task: ClassVar[tuple[str, ...]] = ()

    def shape(self, **set_by_task: Any):
        """The model's config dataclass from this table and ``set_by_task`` (e.g. ``vocab_size`` from the data)."""
        names = {f.name for f in dataclasses.fields(self.shape_class)}
        return self.shape_class(**{k: v for k, v in self.model_dump().items() if k in names}, **set_by_task)

    @model_validator(mode="after")
    def _shape_fits(self):
        if hasattr(type(self), "shape_class"):
            self.shape()  # the dataclass's own checks (n_embd a multiple of n_head, ...) when the file is read
        return self


def model_section(
    shape_class: type,
    *,
    name: str | None = None,
    set_by_task: tuple[str, ...] = (),
    limits: dict[str, FieldInfo] | None = None,
    base: type[ModelSection] = ModelSection,
) -> type[ModelSection]:
    """The pydantic ``[model]`` table of a config dataclass: every field with its type and default,
    so a field added to the dataclass is a key of the run config with no other edit.

    Args:
        shape_class: the model's config dataclass (its ``config_class``).
        name: the class name (default ``<dataclass>Section``).
        set_by_task: fields that are not keys of the file: the training task fills them in (the
            vocabulary size from the data) or leaves them at their defaults (a prior fitted later).
        limits: bounds by field name, e.g. ``{"n_layer": Field(ge=1)}``.
        base: a :class:`ModelSection` subclass with training-only keys.
    """
    limits = dict(limits or {})
    names = [f.name for f in dataclasses.fields(shape_class)]
    stray = sorted((set(limits) | set(set_by_task)) - set(names))
    if stray:
        raise TypeError(f"{shape_class.__name__} has no field {', '.join(stray)}")
    hints = typing.get_type_hints(shape_class, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(shape_class):
        if f.name in set_by_task:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        kind = Annotated[hints[f.name], limits[f.name]] if f.name in limits else hints[f.name]
        fields[f.name] = (kind, default)
    section = create_model(name or f"{shape_class.__name__}Section", __base__=base, **fields)
    section.shape_class, section.set_by_task = shape_class, tuple(set_by_task)
    return section


def parse_config(data: dict, source: str = "<config>") -> RunConfig:
    """Validate a config dict; ``source`` (e.g. the file name) starts every error message."""
    from molgen.train import run_configs  # each model's run config is registered with its training task

    known = run_configs()
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in known:
        raise ConfigError(
            f"{source}: model_type must be one of {sorted(known)} at the top of the file, got {model_type!r}"
        )
    try:
        return known[model_type].model_validate(data)
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
    data, _ = read_toml(path, "run config", "scripts/configs/*.toml")
    return parse_config(data, str(path))


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "value_error":  # our own checks: their message says what to do
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{where}: {message}" if error["loc"] else message
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r} (check the spelling)"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"
