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

__all__ = ["save_pretrained", "from_pretrained", "register_model", "shipped_models", "PRETRAINED_DIR",
           "save_partial", "load_partial", "weights_sha256", "save_adapter", "load_adapter", "is_adapter"]

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
    if isinstance(meta, dict) and "partial" in meta:
        base = meta.get("base", {}).get("name", "?")
        raise ConfigError(f"{path.parent} holds a partial state (a {meta['partial']} of {base}), not a model: "
                          "load it with molgen.models.hub.load_partial")  # fmt: skip
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
    if is_adapter(directory):  # a LoRA adapter on its recorded base, merged
        model = load_adapter(directory, device=device)
        if model_type is not None and model.model_type != model_type:
            raise ConfigError(f"{directory} holds a {model.model_type!r} adapter, not {model_type!r}")
        return model
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
    _refuse_pickle(directory / WEIGHTS_NAME)
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
    _refuse_pickle(path)
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


# --- pickles -------------------------------------------------------------------------------------

_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a bare pickle's protocol opcode


def _refuse_pickle(path: str | os.PathLike) -> None:
    """A clear error for a weights file that is a pickle (``torch.save``), never unpickled."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return  # missing: the loader says so
    # safetensors: an 8-byte header length, then the JSON header; its first byte may well be 0x80
    if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
        raise ConfigError(
            f"{path} is a pickle (torch.save) file, not safetensors: molgen never unpickles weights, which "
            "can run code. Convert it where you trust it: safetensors.torch.save_model(model, 'model.safetensors')"
        )


# --- partial states: a head or an adapter that names its base ------------------------------------

PARTIAL_KINDS = ("head", "adapter")


def weights_sha256(base) -> str:
    """sha256 of a checkpoint's ``model.safetensors``: a folder, a shipped name, or a model loaded
    from one whose weights in memory are still that file's (checked; a fine-tuned one is refused)."""
    from molgen.cache import sha256_file

    return sha256_file(_base_dir(base) / WEIGHTS_NAME)


def _base_dir(base) -> Path:
    """The checkpoint folder a base model, folder or shipped name stands for."""
    if not isinstance(base, torch.nn.Module):
        return resolve(base)
    directory = getattr(base, "checkpoint_dir", None)
    if directory is None:
        raise ConfigError(f"this {type(base).__name__} was not loaded from a checkpoint folder, so nothing can "
                          "name it: save it with save_pretrained(dir), load it from there and pass that")  # fmt: skip
    path = Path(directory) / WEIGHTS_NAME
    stored = load_file(str(path))
    state = base.state_dict()
    if any(k not in state or not torch.equal(v, state[k].detach().cpu()) for k, v in stored.items()):
        raise ConfigError(f"the base model's weights differ from {path} (changed since it was loaded): "
                          "save it with save_pretrained(dir), load it from there and pass that")  # fmt: skip
    return Path(directory)


def _base_record(base) -> dict:
    directory = _base_dir(base)
    shipped = directory.resolve().parent == PRETRAINED_DIR.resolve()
    record = {"name": directory.name, "model_type": read_config(directory)["model_type"], "shipped": shipped,
              "weights_sha256": weights_sha256(directory)}  # fmt: skip
    if not shipped:
        record["path"] = str(directory.resolve())
    return record


def save_partial(module: torch.nn.Module, directory: str | os.PathLike, base, kind: str = "head",
                 provenance: dict | None = None) -> Path:  # fmt: skip
    """Write a partial state, a module trained on top of a base model, naming the base by its weights.

    Writes ``config.json`` (``partial``: the kind; ``class``; the module's ``config``; ``base``: its
    name, ``model_type``, whether it is shipped, its folder when not, and ``weights_sha256`` of its
    ``model.safetensors``) and ``model.safetensors`` with the module's own weights only (safetensors,
    never pickle).

    Args:
        module: an ``nn.Module`` of molgen (e.g. :class:`~molgen.models.heads.PropertyHead`) whose
            only constructor argument is its dataclass ``config``.
        base: the model it was trained on (loaded from a checkpoint folder and unchanged since),
            that folder, or a shipped name.
        kind: ``"head"`` or ``"adapter"``.

    Raises:
        ConfigError: a base that no checkpoint file holds (save it first), an unknown kind.
    """
    from molgen import __version__

    if kind not in PARTIAL_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(PARTIAL_KINDS)}, not {kind!r}")
    cls = type(module)
    if not cls.__module__.startswith("molgen.") or not dataclasses.is_dataclass(getattr(module, "config", None)):
        raise ConfigError(f"{cls.__name__} cannot be saved as a partial state: it needs to be a molgen module "
                          "whose only constructor argument is a dataclass `config`")  # fmt: skip
    meta = {"partial": kind, "class": f"{cls.__module__}.{cls.__qualname__}", "molgen_version": __version__,
            "config": dataclasses.asdict(module.config), "base": _base_record(base), "provenance": provenance or {}}  # fmt: skip
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_model(module, str(tmp), metadata={"partial": kind})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str))
    return directory


def _find_base(directory: Path, meta: dict, base, mismatch: type[Exception] = ConfigError) -> Path:
    """The base folder of a partial state: ``base`` checked, or found by the recorded name (shipped
    or the recorded folder); its ``model.safetensors`` must have the recorded sha256 (else ``mismatch``)."""
    rec = meta["base"]
    want, name = rec.get("weights_sha256", ""), rec.get("name", "?")
    if base is None:
        candidates = [PRETRAINED_DIR / name] if rec.get("shipped") else []
        candidates += [Path(rec["path"])] if rec.get("path") else []
        found = next((d for d in candidates if (d / CONFIG_NAME).is_file()), None)
        if found is None:
            raise ConfigError(f"{directory} is a {meta['partial']} of {name} (weights sha256 {want[:12]}...), which is not "
                              f"shipped with this molgen{' nor at ' + rec['path'] if rec.get('path') else ''}: pass base=")  # fmt: skip
        base_dir = found
    else:
        base_dir = _base_dir(base)
    got = weights_sha256(base_dir)
    if got != want:
        raise mismatch(
            f"{directory} is a {meta['partial']} of {name} with weights sha256 {want[:12]}..., but the base given "
            f"({base_dir}) has {got[:12]}...: a {meta['partial']} fits only the weights it was trained on. "
            "Pass that base, or train it again on this one"
        )
    return base_dir


def load_partial(directory: str | os.PathLike, base=None, device: str = "auto"):
    """Load a partial state written by :func:`save_partial`, with the base it names.

    Args:
        directory: the partial state's folder.
        base: ``None`` finds the base by name (shipped with molgen, or the folder it was saved from);
            a model, folder or shipped name is checked instead. Either way the base's
            ``model.safetensors`` must have the recorded sha256: a head trained on other weights
            would predict nonsense, so a mismatch is refused.
        device: where both go (``"auto"``: CUDA when present); a base model passed in stays where it is.

    Returns:
        ``(module, base_model)``, the module in eval mode.

    Raises:
        ConfigError: not a partial state, a base that cannot be found, a base with other weights,
            a config or weights file that does not fit the module's class.
    """
    import importlib

    from molgen.models import resolve_device

    directory = Path(directory)
    path = directory / CONFIG_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(meta, dict) or "partial" not in meta or not isinstance(meta.get("base"), dict):
        raise ConfigError(f"{path} is not a partial state written by save_partial (a full model loads with from_pretrained)")
    if meta.get("adapter"):
        raise ConfigError(f"{directory} is a {meta['adapter']} adapter: load it with molgen.load_pretrained (merged) "
                          "or molgen.models.hub.load_adapter")  # fmt: skip
    rec = meta["base"]
    base_dir = _find_base(directory, meta, base)
    qualname = str(meta.get("class", ""))
    module_name, _, class_name = qualname.rpartition(".")
    if not module_name.startswith("molgen."):
        raise ConfigError(f"{path}: class {qualname!r} is not a molgen class; refusing to import it")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{path}: this molgen has no class {qualname!r}; use the molgen version that wrote it") from None
    module = cls(build_config(cls, meta.get("config", {}), path))
    _refuse_pickle(directory / WEIGHTS_NAME)
    try:
        load_model(module, str(directory / WEIGHTS_NAME), strict=True, device="cpu")
    except (RuntimeError, SafetensorError, FileNotFoundError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{directory / WEIGHTS_NAME} does not fit {class_name} built from its config: {first}") from None
    module.provenance, module.base = meta.get("provenance", {}), rec
    dev = resolve_device(device)
    base_model = base if isinstance(base, torch.nn.Module) else from_pretrained(base_dir, device=str(dev))
    return module.to(dev).eval(), base_model


# --- LoRA adapters: the adapter's tensors and the rows fine-tuning added, on top of a named base ----

_NEW_ROWS = {"wte": "new_rows.wte", "wpe": "new_rows.wpe"}


def is_adapter(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds an adapter written by :func:`save_adapter`."""
    try:
        meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("partial") == "adapter" and bool(meta.get("adapter"))


def save_adapter(model, directory: str | os.PathLike, base, spec, first_new: dict[str, int] | None = None,
                 provenance: dict | None = None, positions: str = "mean") -> Path:  # fmt: skip
    """Write a SmilesGPT's LoRA adapter (:mod:`molgen.models.lora`) as its own small folder.

    ``model.safetensors`` holds the adapter's tensors and the embedding rows fine-tuning added
    (``new_rows.wte``: new tokens, ``new_rows.wpe``: a longer context); ``config.json`` the adapter's
    shape (``lora``), how the tables grew (``grown``), the base by name and ``weights_sha256``
    (:func:`save_partial`'s record) and the provenance; ``vocab.json`` the (grown) vocabulary.

    Args:
        model: the SmilesGPT with unmerged LoRA layers, grown from ``base``.
        base: the base it was trained on: a shipped name, a folder, or a model loaded from one.
        spec: its :class:`~molgen.models.lora.LoraSpec`.
        first_new: the first added row of each grown table (``{"wte": ..., "wpe": ...}``).
        positions: how the context grew (:meth:`~molgen.models.gpt.SmilesGPT.extend_context`): with
            ``"interpolate"`` the position table is rebuilt from the base's on loading, not stored.
    """
    from safetensors.torch import save_file

    from molgen import __version__
    from molgen.models.lora import lora_state

    tensors = lora_state(model)
    grown = {}
    for table, first in (first_new or {}).items():
        weight = getattr(model, table).weight.detach().cpu()
        if weight.size(0) > first:
            tensors[_NEW_ROWS[table]] = weight[first:].contiguous()
            grown[table] = [first, int(weight.size(0))]
    meta = {"partial": "adapter", "adapter": "lora", "molgen_version": __version__, "lora": spec.to_dict(),
            "block_size": model.config.block_size, "positions": positions, "grown": grown, "base": _base_record(base),
            "provenance": provenance or {}}  # fmt: skip
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"partial": "adapter"})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str))
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save(directory / VOCAB_NAME)
    return directory


def load_adapter(directory: str | os.PathLike, base=None, device: str = "auto", merge: bool = True):
    """A SmilesGPT with the adapter of ``directory`` on its base; what :func:`from_pretrained` (and so
    ``molgen.load_pretrained``, ``molgen generate``) returns for an adapter folder.

    Args:
        base: ``None`` finds the recorded base (shipped, or the folder it was trained from); a name,
            folder or model is checked: its weights must have the recorded sha256.
        merge: fold the adapter into the weights (an ordinary SmilesGPT, sampling at full speed);
            ``False`` keeps peft's LoRA layers (the same function; for training further or checking).

    Raises:
        InputError: a base with other weights than the adapter was trained on.
        ConfigError: an unreadable folder, a base that cannot be found, tensors that do not fit.
    """
    from molgen.errors import InputError
    from molgen.models import resolve_device
    from molgen.models.lora import LoraSpec, add_lora, load_lora_state, merge_lora
    from molgen.tokenize import SmilesTokenizer

    directory = Path(directory)
    if not is_adapter(directory):
        raise ConfigError(f"{directory} is not an adapter folder written by save_adapter (no adapter config.json)")
    meta = json.loads((directory / CONFIG_NAME).read_text())
    base_dir = _find_base(directory, meta, base, mismatch=InputError)
    model = from_pretrained(base_dir, device="cpu", model_type="gpt")
    _refuse_pickle(directory / WEIGHTS_NAME)
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
        with torch.no_grad():
            if meta.get("block_size", model.config.block_size) > model.config.block_size:  # the context grew
                model.extend_context(meta["block_size"], meta.get("positions", "mean"))
            for table, (first, size) in meta.get("grown", {}).items():
                if table == "wte":
                    model.resize_vocab(size)
                getattr(model, table).weight[first:] = state.pop(_NEW_ROWS[table])
        if model.config.block_size != meta.get("block_size", model.config.block_size):
            raise ConfigError(f"block_size {model.config.block_size}, the adapter says {meta['block_size']}")
        lora = dict(meta["lora"], targets=tuple(meta["lora"]["targets"]))
        add_lora(model, LoraSpec(**lora))
        load_lora_state(model, state)
    except (RuntimeError, SafetensorError, KeyError, TypeError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{directory} does not fit its base {base_dir}: {first_line}") from None
    if (directory / VOCAB_NAME).is_file():
        model.tokenizer = SmilesTokenizer.load(directory / VOCAB_NAME)
        if len(model.tokenizer) != model.config.vocab_size:
            raise ConfigError(f"{directory}: {VOCAB_NAME} has {len(model.tokenizer)} tokens, the adapted model "
                              f"{model.config.vocab_size}")  # fmt: skip
    if merge:
        merge_lora(model)
    model.requires_grad_(False)
    model.provenance = meta.get("provenance", {})
    model.adapter = {"path": str(directory), "base": meta["base"], "lora": meta["lora"], "merged": merge}
    del model.checkpoint_dir  # the weights in memory are no file's: nothing may name them as a base
    return model.to(resolve_device(device)).eval()
