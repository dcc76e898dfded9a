"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``vocab.json`` + ``README.md``.

The layout follows huggingface_hub. Weights are safetensors only (never pickle), so loading a
checkpoint cannot run code. ``config.json`` holds ``model_type`` (which class to build), the
molgen version, the model's config fields and a provenance record (data and its sha256, seed,
steps, tokens seen, parent checkpoint). A folder whose config does not fit the code raises
:class:`~molgen.errors.ConfigError` saying what differs.

A model class takes part by having ``model_type`` and ``config_class`` (a dataclass) attributes
and calling :func:`register_model` when its module is imported; loading a checkpoint imports the
shipped model modules first (:func:`_import_shipped_models`), so it works without importing them.
Training registers separately, one layer up (``molgen.train.register_task``): models never import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_model

from molgen.errors import ConfigError
from molgen.files import atomic_path

__all__ = ["save_pretrained", "from_pretrained", "register_model", "shipped_models", "PRETRAINED_DIR"]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, CARD_NAME = "config.json", "model.safetensors", "vocab.json", "README.md"

_REGISTRY: dict[str, type] = {}  # model_type -> model class


def register_model(model_type: str, cls: type) -> None:
    """Make ``from_pretrained`` build ``cls`` for checkpoints of this ``model_type``."""
    if not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise TypeError(f"{cls.__name__} needs a dataclass `config_class` attribute to be registered")
    if getattr(cls, "model_type", model_type) != model_type:
        raise TypeError(f"{cls.__name__}.model_type is {cls.model_type!r}, registered as {model_type!r}")
    _REGISTRY[model_type] = cls


def _import_shipped_models() -> None:
    """Import the model modules molgen ships; each registers its class on import."""
    from molgen.models import gpt, graph_vae  # noqa: F401


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped in ``molgen/pretrained/``."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def save_pretrained(model, directory: str | os.PathLike, provenance: dict | None = None, card: str | None = None) -> Path:
    """Write a checkpoint folder for ``model``; returns the folder.

    Args:
        model: an ``nn.Module`` with ``model_type`` and a dataclass ``config``; its ``tokenizer``
            (when it has one) is written as ``vocab.json``.
        directory: created if missing; existing files of the same names are replaced.
        provenance: where the weights come from (data name and sha256, seed, steps,
            tokens seen, parent checkpoint); stored verbatim in ``config.json``.
        card: the ``README.md`` model card; ``None`` keeps an existing card or writes a stub
            that says the metrics are not measured yet.
    """
    from molgen import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_type": model.model_type,
        "molgen_version": __version__,
        "config": dataclasses.asdict(model.config),
        "provenance": provenance or {},
    }
    # every file goes to a temporary name first, so an interrupted export never leaves a torn file
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_model(model, str(tmp), metadata={"model_type": model.model_type})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str))
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save(directory / VOCAB_NAME)
    if card is None and not (directory / CARD_NAME).exists():
        card = (f"# {directory.name}\n\nA molgen `{model.model_type}` checkpoint. Metrics not measured yet: "
                "run `python scripts/make_card.py` on this folder.\n")  # fmt: skip
    if card is not None:
        with atomic_path(directory / CARD_NAME) as tmp:
            tmp.write_text(card)
    return directory


def resolve(name_or_dir: str | os.PathLike) -> Path:
    """The checkpoint folder for a shipped name or a path."""
    path = Path(name_or_dir)
    if (path / CONFIG_NAME).is_file():
        return path
    shipped = PRETRAINED_DIR / str(name_or_dir)
    if (shipped / CONFIG_NAME).is_file():
        return shipped
    if path.is_dir():
        raise ConfigError(f"{path} is not a molgen checkpoint: it has no {CONFIG_NAME}")
    names = ", ".join(shipped_models()) or "none"
    raise ConfigError(f"no checkpoint folder or shipped model named {str(name_or_dir)!r}; shipped models: {names}")


def read_config(directory: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint folder, checked for the top-level keys."""
    path = Path(directory) / CONFIG_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    missing = [k for k in ("model_type", "config") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; it was not written by molgen's save_pretrained")
    return meta


def model_class(model_type: str) -> type:
    """The registered model class for ``model_type`` (the shipped ones need no import first)."""
    if model_type not in _REGISTRY:
        _import_shipped_models()
    if model_type not in _REGISTRY:
        raise ConfigError(f"unknown model_type {model_type!r}; this molgen knows: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[model_type]


def build_config(cls: type, fields: dict, source: Path):
    """The model's config dataclass from ``fields``, failing clearly on unknown or missing keys."""
    config_class = cls.config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    required = {
        f.name
        for f in dataclasses.fields(config_class)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown, missing = sorted(set(fields) - names), sorted(required - set(fields))
    if unknown or missing:
        parts = [f"unknown keys {unknown}" if unknown else "", f"missing keys {missing}" if missing else ""]
        raise ConfigError(
            f"{source}: config does not fit {config_class.__name__} of this molgen version "
            f"({'; '.join(p for p in parts if p)}); use the molgen version that wrote it"
        )
    try:
        return config_class(**fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid config: {err}") from None


def from_pretrained(name_or_dir: str | os.PathLike, device: str = "auto", model_type: str | None = None):
    """Load a model from a checkpoint folder or shipped name, in eval mode on ``device``.

    Args:
        name_or_dir: a folder written by :func:`save_pretrained` or a name from :func:`shipped_models`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``, ...
        model_type: when given, the checkpoint must be of this type (e.g. a class's own loader).

    Raises:
        ConfigError: the folder is missing or its config, vocabulary or weights do not fit the code.
    """
    from molgen.models import resolve_device

    directory = resolve(name_or_dir)
    meta = read_config(directory)
    if model_type is not None and meta["model_type"] != model_type:
        raise ConfigError(f"{directory} holds a {meta['model_type']!r} model, not {model_type!r}")
    cls = model_class(meta["model_type"])
    model = cls(build_config(cls, meta["config"], directory / CONFIG_NAME))
    if (directory / VOCAB_NAME).is_file():
        from molgen.tokenize import SmilesTokenizer

        model.tokenizer = SmilesTokenizer.load(directory / VOCAB_NAME)
        vocab_size = getattr(model.config, "vocab_size", len(model.tokenizer))
        if len(model.tokenizer) != vocab_size:
            raise ConfigError(
                f"{directory}: {VOCAB_NAME} has {len(model.tokenizer)} tokens but the config says vocab_size={vocab_size}"
            )
    try:
        load_model(model, str(directory / WEIGHTS_NAME), strict=True, device="cpu")
    except (RuntimeError, SafetensorError, FileNotFoundError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{directory / WEIGHTS_NAME} does not fit the model built from its config: {first}") from None
    model.provenance = meta.get("provenance", {})
    model.checkpoint_dir = directory
    return model.to(resolve_device(device)).eval()


def load_state_into(model: torch.nn.Module, directory: str | os.PathLike, skip: tuple[str, ...] = ()) -> None:
    """Load a checkpoint's weights into an existing model of the same shape (fine-tuning start).

    ``skip`` names tensors of the checkpoint to leave out (e.g. a fitted prior that describes the
    parent's latent space, not the model being trained). Every other tensor must match the model
    exactly.
    """
    directory = resolve(directory)
    device = str(next(model.parameters()).device)
    path = str(directory / WEIGHTS_NAME)
    try:
        with safe_open(path, "pt") as f:  # reads the header only
            skipping = any(k in skip for k in f.keys())
        if skipping:
            state = load_file(path, device=device)
            model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=True)
        else:  # load_model also restores tied weights that the file stores once
            load_model(model, path, strict=True, device=device)
    except (RuntimeError, SafetensorError) as err:
        raise ConfigError(f"{directory / WEIGHTS_NAME} does not fit this model: {err}") from None
