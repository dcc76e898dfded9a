"""Generative fine-tuning: adapt a pretrained generator to a target set, and say what it gained.

:func:`finetune` (a notebook's call) and :func:`finetune_config` (``molgen finetune --config``, one
TOML such as ``scripts/configs/finetune_gpt_chembl2321810.toml``) both run the ordinary training task
(:func:`molgen.train.pretrain` with ``task = "finetune"``: freeze policy, early stopping, a context
grown to the target's molecules) and measure the parent and the child the same way:

- for ``eval_samples`` seeded samples: ``valid``, ``unique`` (share of distinct valid molecules),
  ``novel_moses`` (share of the unique valid ones absent from MOSES train), ``novel_target`` (absent
  from the target training molecules: a model that recites its 100 molecules scores low),
  ``FCD``, ``SNN``, ``Frag``, ``Scaf`` to the held-out target molecules, ``scaffold_share`` (share of
  the valid samples whose Bemis-Murcko scaffold is one of the held-out molecules'), ``IntDiv``;
- ``held_out_nll``: nats per token of the held-out molecules each model can read (a parent cannot
  read the ones longer than its context or with tokens it never saw: counted in ``held_out_unreadable``),
  and ``held_out_nll_common`` on the ones both can read, the like-for-like comparison.
- forgetting, what the parent could do and the child may have lost: ``moses_FCD`` (the same samples'
  FCD to MOSES test, against MOSES's published statistics) and ``moses_nll`` (nats per token of a
  seeded ``forgetting_molecules`` MOSES test molecules); ``forgetting`` in the report is after minus
  before for both and for ``valid``. Rehearsal and the L2-SP/EWC anchor (``[finetune] rehearsal``,
  ``anchor``) are there to keep these small; ``trainable`` says how much of the model trained
  (a LoRA run: its adapters and the rows it added). A child trained with ``rehearsal_tag`` writes
  the target's molecules by default and MOSES's when asked (``condition={"moses": 1}``): its
  ``moses_FCD`` and ``moses_nll`` are measured so asked, its other figures by default.
- property-guided fine-tuning (``[finetune] weight_by``: training molecules drawn by their measured
  property, :func:`molgen.data.property_weights`): ``property_mean`` and the quartiles
  ``property_q25`` / ``property_median`` / ``property_q75`` of the valid samples' property as a
  :class:`~molgen.transfer.PropertyModel` predicts it (``[finetune] property_model``, or a GP on
  graph-VAE features fitted to the training molecules), before and after, so the shift sits beside
  its cost in validity, novelty and diversity; ``property_model`` in the report says which model and
  how well it predicts the held-out molecules' measured values. ``[finetune] iterate = K`` then
  fine-tunes K more rounds on the model's own best samples by that model (:func:`_iterate`); the
  report's ``rounds`` say what each round sampled and kept, and ``after`` is the last round's model.

The target split is :func:`molgen.data.target_split` (a seeded ``n_train``; the training task cuts
the same rows and takes its validation molecules from them). ``report.json`` and ``report.md`` land
in the run folder beside the export.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.errors import ConfigError, InputError

__all__ = ["finetune", "finetune_config", "run_config", "assess", "REPORT_KEYS", "SAMPLES"]

#: the samples each report measured, in the run folder (``molgen demo`` reads them rather than drawing them again)
SAMPLES = {"parent": "samples_parent.csv", "fine-tuned": "samples_finetuned.csv"}
REPORT_KEYS = ("valid", "unique", "novel_moses", "novel_target", "FCD", "SNN", "Frag", "Scaf", "scaffold_share",
               "IntDiv", "held_out_nll", "held_out_unreadable", "held_out_nll_common", "held_out_common_n",
               "moses_FCD", "moses_nll", "property_mean", "property_q25", "property_median", "property_q75")  # fmt: skip


def finetune(base: str, data, target_col: str | None = None, min_target: float | None = None, policy="none",
             n_train: int | None = 100, max_steps: int = 300, out: str | Path = "runs/finetune", *,
             smiles_col: str | None = None, lr: float = 3e-4, patience: int | None = 5, val_every_steps: int = 20,
             batch_size: int = 32, augment: float | None = None, dropout: float | None = None,
             eval_samples: int = 1000, rehearsal: float = 0.0, anchor: str | None = None,
             anchor_weight: float | None = None, forgetting_molecules: int = 2000, weight_by: str | None = None,
             weight_direction: str = "max", weight_scheme: str = "rank", property_model: str | None = None,
             iterate: int = 0, iterate_samples: int = 1000, iterate_top: float = 0.2, seed: int = 0):  # fmt: skip
    """Fine-tune ``base`` on ``data`` and report before and after.

    Args:
        base: a shipped name or checkpoint folder (a SmilesGPT).
        data: a named data set (``"chembl2321810"``), a molecule file, a DataFrame or a list of SMILES.
        target_col, min_target: keep only the molecules with ``target_col >= min_target`` (e.g. the
            soluble tail of ``solubility``: ``target_col="logS", min_target=-1``).
        policy: a :class:`~molgen.train.freeze.FreezePolicy`, ``"none"``, ``"head_only"``, ``"first_k:2"``,
            ``"lora"`` (default adapters) or ``FreezePolicy("lora", lora=LoraSpec(r=4, alpha=8))``.
        n_train: molecules to train on (seeded; validation taken from them); the rest are held out for
            the report. ``None`` trains on all and reports no held-out figures.
        max_steps: optimizer steps at most; early stopping (``patience`` validations without a lower
            validation loss, every ``val_every_steps``) may stop sooner, and the best validation's
            weights are exported.
        out: the run folder (checkpoints, logs, ``export/``, ``report.json``, ``report.md``).
        augment: chance of a randomised SMILES per training row (``None``: 0.5 below 1,000 molecules).
        eval_samples: molecules sampled from each model for the report.
        rehearsal: share of each batch that is MOSES train molecules (against forgetting).
        anchor, anchor_weight: ``"l2sp"`` or ``"ewc"``: a pull towards the parent's weights.
        forgetting_molecules: MOSES test molecules scored before and after (0: no forgetting figures).
        weight_by, weight_direction, weight_scheme: property-guided fine-tuning: draw training molecules
            by their measured ``weight_by`` column (``"max"``/``"min"`` is better; ``"rank"`` or
            ``"softmax"`` weights); ``property_model``: a saved PropertyModel folder that predicts the
            samples' property for the report (default with ``weight_by``: a GP fitted to the training molecules).
        iterate, iterate_samples, iterate_top: then ``iterate`` rounds of fine-tuning on the best
            ``iterate_top`` share of ``iterate_samples`` of the model's own samples by that property model.

    Returns:
        ``(model, report)``: the fine-tuned model and the report dict (``before``, ``after``, ...).
    """
    out = Path(out)
    source = _materialise(data, target_col, min_target, smiles_col, out, keep=weight_by)
    config = run_config(base, source, out, policy, n_train=n_train, max_steps=max_steps, lr=lr, patience=patience,
                        val_every_steps=val_every_steps, batch_size=batch_size, augment=augment, dropout=dropout,
                        eval_samples=eval_samples, rehearsal=rehearsal, anchor=anchor, anchor_weight=anchor_weight,
                        forgetting_molecules=forgetting_molecules, weight_by=weight_by,
                        weight_direction=weight_direction, weight_scheme=weight_scheme, property_model=property_model,
                        iterate=iterate, iterate_samples=iterate_samples, iterate_top=iterate_top, seed=seed)  # fmt: skip
    return finetune_config(config)


def run_config(base: str, source: str, out: str | Path, policy="none", *, scratch: bool = False,
               n_train: int | None = None, max_steps: int = 300, lr: float = 3e-4, patience: int | None = 5,
               val_every_steps: int = 20, batch_size: int = 32, augment: float | None = None,
               dropout: float | None = None, eval_samples: int = 1000, rehearsal: float = 0.0,
               anchor: str | None = None, anchor_weight: float | None = None, forgetting_molecules: int = 2000,
               max_block_size: int = 256, weight_by: str | None = None, weight_direction: str = "max",
               weight_scheme: str = "rank", property_model: str | None = None, iterate: int = 0,
               iterate_samples: int = 1000, iterate_top: float = 0.2, seed: int = 0):  # fmt: skip
    """The training run of :func:`finetune` as a checked :class:`~molgen.config.RunConfig` (the same
    arguments; ``source`` is what ``[data] dataset`` names, ``out`` the run folder).

    ``scratch=True`` is the no-pretraining control: ``base``'s architecture (layers, heads, width,
    dropout) with fresh weights, ``task = "pretrain"`` on the same data, steps, schedule and early
    stopping, its vocabulary built from the data (in the parent's SMILES form) and its context fitted
    to the longest training molecule the way fine-tuning grows the parent's
    (:func:`molgen.train.gpt.context_for`); freeze policies, rehearsal and anchors do not apply.
    """
    from molgen.config import parse_config
    from molgen.models.hub import read_config, resolve
    from molgen.train.freeze import FreezePolicy

    out = Path(out)
    policy = FreezePolicy.parse(policy)
    parent = read_config(resolve(base))
    raw = {
        "model_type": parent["model_type"],
        "task": "finetune",
        "name": out.name,
        "run_dir": str(out),
        "init_from": str(base),
        "data": {"dataset": str(source), "val_fraction": 0.1, "augment": augment},
        "optim": {"lr": lr, "min_lr": lr / 10, "weight_decay": 0.1, "warmup_steps": min(20, max_steps // 10)},
        "trainer": {"max_steps": max_steps, "batch_size": batch_size, "val_every_steps": val_every_steps,
                    "patience": patience, "log_every_steps": val_every_steps, "checkpoint_minutes": 30,
                    "progress_bar": False, "seed": seed},  # fmt: skip
        "finetune": {"freeze": policy.kind, "k": policy.k, "dropout": dropout, "n_train": n_train,
                     "eval_samples": eval_samples, "rehearsal": rehearsal, "anchor": anchor,
                     "forgetting_molecules": forgetting_molecules, "max_block_size": max_block_size},  # fmt: skip
    }
    if scratch:
        if policy.kind != "none" or rehearsal or anchor:
            raise InputError("a model from scratch has no parent to freeze, rehearse or anchor to: policy 'none' only")
        raw.update(task="pretrain", init_from=None, finetune={"n_train": n_train, "eval_samples": eval_samples})
        raw["model"], raw["data"]["kekule"] = _scratch_shape(base, parent, source, n_train, seed, max_block_size)
    if policy.lora is not None:
        lora = policy.lora.to_dict()
        raw["finetune"].update({f"lora_{k}": lora[k] for k in ("r", "alpha", "dropout", "targets")})
    if anchor_weight is not None:
        raw["finetune"]["anchor_weight"] = anchor_weight
    if weight_by is not None:
        raw["finetune"].update(weight_by=weight_by, weight_direction=weight_direction, weight_scheme=weight_scheme)
    if property_model is not None:
        raw["finetune"]["property_model"] = str(property_model)
    if iterate:
        raw["finetune"].update(iterate=iterate, iterate_samples=iterate_samples, iterate_top=iterate_top)
    return parse_config(raw, "finetune()")


def _scratch_shape(base: str, parent: dict, source: str, n_train: int | None, seed: int, limit: int) -> tuple[dict, bool]:
    """The ``[model]`` table of a from-scratch copy of ``base`` (its shape, and a context that fits
    the training molecules in the parent's spelling as a fine-tuned parent's would) and that spelling
    (Kekulé or not)."""
    from molgen.data import target_split
    from molgen.models.hub import VOCAB_NAME, resolve
    from molgen.tokenize import SmilesTokenizer
    from molgen.train.gpt import context_for, read_molecules

    shape = parent["config"]
    tok = SmilesTokenizer.load(resolve(base) / VOCAB_NAME)
    df = read_molecules(source)
    smiles = df.loc[df["valid"], "smiles"].tolist()
    if n_train:
        smiles = [smiles[i] for i in target_split(len(smiles), n_train, seed)[0]]
    longest = max((len(tok.tokens(s)) + 2 for s in smiles), default=0)
    block = context_for(longest, limit) if longest > shape["block_size"] else shape["block_size"]
    keep = ("n_layer", "n_head", "n_embd", "n_kv_head", "bias", "dropout")
    return {**{k: shape[k] for k in keep if k in shape}, "block_size": block}, tok.kekule


def finetune_config(config) -> tuple:
    """Run a fine-tuning config (a :class:`~molgen.config.RunConfig` or a TOML path): measure the parent,
    train, measure the child; writes ``report.json`` / ``report.md`` in the run folder."""
    from molgen.config import RunConfig, load_config
    from molgen.data import target_split
    from molgen.datasets import moses_sample
    from molgen.files import write_json
    from molgen.models import load_pretrained
    from molgen.train import pretrain, resume_checkpoint
    from molgen.train.gpt import read_molecules

    source = None
    if not isinstance(config, RunConfig):
        source, config = config, load_config(config)
    if config.task != "finetune" or config.model_type != "gpt":
        raise InputError(f"molgen finetune takes a GPT run config with task = 'finetune' (init_from), "
                         f"not {config.model_type} / {config.task}")  # fmt: skip
    if resume_checkpoint(config.run_dir) is not None:  # before minutes of measuring the parent
        raise ConfigError(f"{config.run_dir} already holds a run: change `name`/`run_dir` or remove the folder")
    ft, seed = config.finetune, config.trainer.seed
    df = read_molecules(config.data.dataset)
    smiles = df.loc[df["valid"], "smiles"].tolist()
    parts = [np.arange(len(smiles)), np.zeros(0, int)] if not ft.n_train else target_split(len(smiles), ft.n_train, seed)
    train, held = ([smiles[i] for i in idx] for idx in parts)
    moses = moses_sample("test", ft.forgetting_molecules, seed) if ft.forgetting_molecules else None
    measured = pd.to_numeric(df.loc[df["valid"], ft.weight_by], errors="coerce").to_numpy() if ft.weight_by in df else None
    predictor, predictor_info = _property_model(ft, train, held, measured, parts, seed)
    base = load_pretrained(config.init_from, device="cpu")
    print(f"measuring the parent {config.init_from} ({ft.eval_samples} samples)", flush=True)
    run_dir = Path(config.run_dir)
    before = assess(base, train, held, ft.eval_samples, seed, moses, predictor, save=run_dir / SAMPLES["parent"])
    export = pretrain(source if source is not None else config)
    model = load_pretrained(export, device="cpu")  # a LoRA run's adapter comes merged into its base
    rounds = []
    if ft.iterate:
        model, export, rounds = _iterate(config, model, export, predictor, train, seed)
    print(f"measuring the fine-tuned model {export} ({ft.eval_samples} samples)", flush=True)
    after = assess(model, train, held, ft.eval_samples, seed, moses, predictor, save=run_dir / SAMPLES["fine-tuned"])
    _common_fit(before, after)
    prov = model.provenance
    done = prov.get("finetune", {})
    report = {
        "base": config.init_from, "export": str(export), "data": config.data.dataset,
        "n_molecules": len(smiles), "n_train": len(train), "n_held_out": len(held),
        "invalid_skipped": int((~df["valid"]).sum()), "too_long_skipped": prov["data"].get("too_long_skipped", 0),
        "freeze": done.get("freeze"), "lora": done.get("lora"), "trainable": done.get("trainable"),
        "rehearsal": done.get("rehearsal"), "rehearsal_tag": done.get("rehearsal_tag"), "anchor": done.get("anchor"),
        "context": done.get("context"), "new_tokens": done.get("new_tokens"),
        "steps": prov["steps"], "validation": prov.get("validation"), "early_stopping": prov.get("early_stopping"),
        "eval_samples": ft.eval_samples, "forgetting_molecules": len(moses or []), "seed": seed,
        "weights": prov["data"].get("weights"), "property_model": predictor_info, "rounds": rounds,
        "before": before, "after": after, "forgetting": _forgetting(before, after),
    }  # fmt: skip
    write_json(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(markdown(report))
    return model, report


def _materialise(data, target_col, min_target, smiles_col, out: Path, keep: str | None = None) -> str:
    """The target set as something ``[data] dataset`` names: a data set name or file as given, or
    ``<out>/target.csv`` for a table, a list, or a selection by ``target_col >= min_target``."""
    from molgen.io import read_table
    from molgen.train.gpt import read_molecules

    if isinstance(data, (str, Path)) and target_col is None and smiles_col is None:
        return str(data)
    if isinstance(data, (str, Path)):
        df = read_table(data, smiles_col=smiles_col) if Path(data).exists() else read_molecules(str(data))
    elif isinstance(data, pd.DataFrame):
        df = data.rename(columns={smiles_col: "smiles"}) if smiles_col else data
    else:
        df = pd.DataFrame({"smiles": list(data)})
    if "smiles" not in df.columns:
        raise InputError(f"the target table has no 'smiles' column (pass smiles_col); columns: {list(df.columns)}")
    if target_col is not None:
        if target_col not in df.columns:
            raise InputError(f"target_col {target_col!r} is not a column; columns: {list(df.columns)}")
        if min_target is None:
            raise InputError("target_col selects molecules with target_col >= min_target: pass min_target too")
        df = df[pd.to_numeric(df[target_col], errors="coerce") >= min_target]
        if df.empty:
            raise InputError(f"no molecule has {target_col} >= {min_target}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "target.csv"
    if keep is not None and keep not in df.columns:
        raise InputError(f"weight_by {keep!r} is not a column of the target table; columns: {list(df.columns)}")
    df[["smiles"] + ([keep] if keep and keep != "smiles" else [])].to_csv(path, index=False)
    return str(path)


def assess(model, train: list[str], held_out: list[str], n: int = 1000, seed: int = 0,
           moses: list[str] | None = None, property_model=None, save: Path | None = None) -> dict:  # fmt: skip
    """The report's figures for one model (see the module docstring); ``held_out`` may be empty;
    ``moses`` (MOSES test molecules) adds the forgetting figures ``moses_FCD`` and ``moses_nll``;
    ``property_model`` (``smiles -> DataFrame(mean, ...)``, a PropertyModel) the predicted property's
    mean and quartiles over the valid samples; ``save``: a CSV file for the samples measured."""
    from molgen.chem import scaffold
    from molgen.metrics import evaluate, novelty
    from molgen.metrics.features import smiles_hashes
    from molgen.metrics.reference import moses_train_hashes
    from molgen.sample import sample

    samples = sample(model, n, seed=seed)
    if save is not None:
        from molgen.io import write_table

        write_table(samples, save)
    valid = _valid_canonical(samples)
    out: dict = {"valid": len(valid) / n, "unique": len(set(valid)) / len(valid) if valid else math.nan,
                 "novel_moses": novelty(valid, moses_train_hashes()),
                 "novel_target": novelty(valid, smiles_hashes(train))}  # fmt: skip
    if held_out and len(valid) >= 2:
        m = evaluate(valid, reference=held_out, train=None, extra=False)
        out.update({k: m[f"{k}/Test"] for k in ("FCD", "SNN", "Frag", "Scaf")})
        held_scaffolds = {scaffold(s) for s in held_out} - {None}
        out["scaffold_share"] = float(np.mean([scaffold(s) in held_scaffolds for s in valid]))
        out["IntDiv"] = m["IntDiv"]
        out["caveats"] = m["caveats"]
    elif valid:
        m = evaluate(valid, reference=train, extra=False)
        out["IntDiv"] = m["IntDiv"]
    if held_out:
        nll, unreadable, per = _nll(model, held_out)
        out.update({"held_out_nll": nll, "held_out_unreadable": unreadable, "_per_molecule": per})
    if moses:
        tag = _rehearsal_tag(model)  # a tagged child writes MOSES molecules when asked: its forgetting is measured so
        if tag is not None:
            out["moses_FCD"] = _moses_fcd(_valid_canonical(sample(model, n, seed=seed, condition=tag)))
        else:
            out["moses_FCD"] = _moses_fcd(valid)
        out["moses_nll"], out["moses_unreadable"], _ = _nll(model, moses, tag)
    if property_model is not None and valid:
        pred = property_model.predict(valid)["mean"].to_numpy()
        pred = pred[np.isfinite(pred)]
        if len(pred):
            q25, q50, q75 = np.quantile(pred, [0.25, 0.5, 0.75])
            out.update(property_mean=float(pred.mean()), property_q25=float(q25), property_median=float(q50),
                       property_q75=float(q75), property_predicted=len(pred))  # fmt: skip
    out["n_samples"] = n
    return out


def _iterate(config, model, export, predictor, train: list[str], seed: int):
    """Iterated fine-tuning on the model's own samples ranked by a property model: each round samples
    ``iterate_samples`` molecules, keeps the valid distinct ones that are not training molecules, and
    fine-tunes the last model on the best ``iterate_top`` share of them by predicted property (at
    least 10), with the run's optimiser, steps and early stopping (the SMILES hill-climb of Neil et al.
    2018 and GuacaMol's baseline, Brown et al. 2019, with a learnt property model as the score).
    Returns the last model, its export folder and one record per round."""
    from molgen.chem import canonicalize
    from molgen.config import parse_config
    from molgen.models import load_pretrained
    from molgen.sample import sample
    from molgen.train import pretrain

    ft, run_dir = config.finetune, Path(config.run_dir)
    known = {canonicalize(s) for s in train}
    rounds = []
    for k in range(1, ft.iterate + 1):
        drawn = sample(model, ft.iterate_samples, seed=seed + k)
        new = list(dict.fromkeys(c for c in map(canonicalize, drawn.loc[drawn["valid"], "smiles"]) if c and c not in known))
        pred = predictor.predict(new)["mean"].to_numpy() if new else np.zeros(0)
        ok = np.isfinite(pred)
        new, pred = [s for s, k_ in zip(new, ok, strict=True) if k_], pred[ok]
        if len(new) < 10:
            raise InputError(f"iterate round {k}: only {len(new)} new valid molecules in {ft.iterate_samples} samples; "
                             "raise iterate_samples or stop at fewer rounds")  # fmt: skip
        order = np.argsort(pred if ft.weight_direction == "min" else -pred, kind="stable")
        top = order[: max(10, int(round(ft.iterate_top * len(new))))]
        folder = run_dir / f"round-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "top.csv"
        pd.DataFrame({"smiles": [new[i] for i in top], "predicted": pred[top]}).to_csv(source, index=False)
        raw = config.model_dump(exclude_unset=True)
        raw.update(init_from=str(export), name=f"{config.name}-round-{k}", run_dir=str(folder / "run"), export_dir=None,
                   task="finetune")  # fmt: skip
        raw["data"] = {**raw.get("data", {}), "dataset": str(source)}
        raw["finetune"] = {key: v for key, v in raw.get("finetune", {}).items()
                           if key in ("freeze", "k", "dropout", "max_block_size", "rehearsal", "anchor", "anchor_weight",
                                      "fisher_molecules")}  # fmt: skip
        print(f"iterate round {k}: fine-tuning on the best {len(top)} of {len(new)} new valid samples (predicted "
              f"{pred[top].mean():.3g} against {pred.mean():.3g} for all)", flush=True)  # fmt: skip
        export = pretrain(parse_config(raw, f"iterate round {k}"))
        model = load_pretrained(export, device="cpu")
        rounds.append({"round": k, "sampled": ft.iterate_samples, "new_valid": len(new), "kept": len(top),
                       "samples_predicted_mean": float(pred.mean()), "kept_predicted_mean": float(pred[top].mean()),
                       "export": str(export)})  # fmt: skip
    return model, export, rounds


def _property_model(ft, train: list[str], held: list[str], measured, parts, seed: int):
    """The model that predicts the samples' property for the report, and what the report says of it:
    ``[finetune] property_model`` loaded, or with ``weight_by`` a GP on graph-VAE features fitted to the
    training molecules' measured values; its RMSE and Spearman correlation on the held-out molecules'
    measured values say how far to trust the shift it reports. ``(None, None)`` without either."""
    from molgen.transfer import PropertyModel

    if ft.property_model:
        model = PropertyModel.load(ft.property_model)
        info = {"path": ft.property_model, "features": model.features, "head": model.head, "target": model.target}
    elif ft.weight_by and measured is not None:
        y = measured[parts[0]]
        ok = np.isfinite(y)
        print(f"fitting a GP on graph-vae-moses features to the {int(ok.sum())} training molecules' {ft.weight_by} "
              "(predicts the samples' property for the report)", flush=True)  # fmt: skip
        model = PropertyModel("graph-vae-moses", "gp", seed=seed).fit(([s for s, k in zip(train, ok, strict=True) if k], y[ok]))
        info = {"features": "graph-vae-moses", "head": "gp", "target": ft.weight_by, "fitted_on": int(ok.sum())}
    else:
        return None, None
    if held and measured is not None:
        from scipy.stats import spearmanr

        y, pred = measured[parts[1]], model.predict(held)["mean"].to_numpy()
        ok = np.isfinite(y) & np.isfinite(pred)
        if ok.sum() >= 3:
            info.update(held_out_rmse=float(np.sqrt(np.mean((pred[ok] - y[ok]) ** 2))),
                        held_out_spearman=float(spearmanr(pred[ok], y[ok]).statistic), held_out_n=int(ok.sum()),
                        held_out_measured_mean=float(y[ok].mean()))  # fmt: skip
    if measured is not None:
        y = measured[parts[0]]
        info["train_measured_mean"] = float(np.nanmean(y))
    return model, info


def _moses_fcd(valid: list[str]) -> float:
    """FCD of the valid samples to MOSES test (MOSES's published ChemNet statistics)."""
    from molgen.metrics import fcd
    from molgen.metrics.reference import moses_reference

    if len(valid) < 2:
        return math.nan
    ref = moses_reference("test")
    return float(fcd.frechet_distance(ref.fcd_mu, ref.fcd_sigma, *fcd.fcd_stats(fcd.activations(valid))))


def _forgetting(before: dict, after: dict) -> dict:
    """After minus before for what the parent could do: validity, FCD to MOSES test, MOSES test NLL."""
    return {k: after[k] - before[k] for k in ("valid", "moses_FCD", "moses_nll") if k in before and k in after}


def _valid_canonical(samples: pd.DataFrame) -> list[str]:
    """Canonical SMILES of a sample table's valid rows (those RDKit also reads)."""
    from molgen.chem import to_smiles

    canon = [to_smiles(s) for s in samples.loc[samples["valid"], "smiles"]]
    return [s for s in canon if s is not None]


def _rehearsal_tag(model) -> dict | None:
    """``{"moses": 1}`` for a model fine-tuned with ``[finetune] rehearsal_tag``, else ``None``."""
    from molgen.train.gpt import REHEARSAL_TAG

    names = (getattr(model.config, "condition", None) or {}).get("names") or []
    return {REHEARSAL_TAG: 1.0} if REHEARSAL_TAG in names else None


def _nll(model, smiles: list[str], condition: dict | None = None) -> tuple[float, int, dict]:
    """Nats per token of the molecules the model can read (under ``condition``), how many it cannot,
    and per molecule ``(nats, tokens)``."""
    tok, block = model.tokenizer, model.config.block_size
    readable, lengths = [], []
    for s in smiles:
        tokens = tok.tokens(s)
        if len(tokens) + 2 <= block and all(t in tok.stoi for t in tokens):
            readable.append(s)
            lengths.append(len(tokens) + 1)  # scored: every token after <bos>, <eos> included
    ll = model.log_likelihood(readable, batch_size=128, condition=condition) if readable else np.zeros(0)
    per = {s: (-float(v), n) for s, v, n in zip(readable, ll, lengths, strict=True)}  # (nats, tokens)
    return float(-ll.sum() / sum(lengths)) if readable else math.nan, len(smiles) - len(readable), per


def _common_fit(before: dict, after: dict) -> None:
    """``held_out_nll_common``: nats per token over the held-out molecules both models can read."""
    per_b, per_a = before.pop("_per_molecule", {}), after.pop("_per_molecule", {})
    common = [s for s in per_b if s in per_a]
    for side, per in ((before, per_b), (after, per_a)):
        if common:
            side["held_out_nll_common"] = float(sum(per[s][0] for s in common) / sum(per[s][1] for s in common))
            side["held_out_common_n"] = len(common)


def markdown(report: dict) -> str:
    """The report as a short Markdown page: the run, then before / after per figure."""
    b, a = report["before"], report["after"]
    ctx, stop = report["context"], report["early_stopping"]
    context = (f"context {ctx['from']} -> {ctx['to']} tokens ({ctx['rows_longer']} of the {report['n_train']} molecules "
               f"longer than {ctx['from']}; positions {ctx.get('positions', 'mean')})" if ctx else "context unchanged")  # fmt: skip
    steps = f"{report['steps']} steps" + (f", best validation at step {stop['best_step']}" if stop else "")
    new = ", ".join(f"{t} from {s}" for t, s in (report.get("new_tokens") or {}).items())
    share = report.get("trainable")
    trained = (f"; trained {share['trainable']:,} of {share['total']:,} parameters ({share['fraction']:.2%})"
               if share else "")  # fmt: skip
    lora = report.get("lora")
    freeze = f"{report['freeze']} (r {lora['r']}, alpha {lora['alpha']:g})" if lora else report["freeze"]
    tagged = " (tagged: MOSES figures with condition moses = 1)" if report.get("rehearsal_tag") else ""
    keep = [f"rehearsal {report['rehearsal']:g}{tagged}" if report.get("rehearsal") else "",
            f"anchor {report['anchor']['kind']} {report['anchor']['weight']:g}" if report.get("anchor") else ""]
    w = report.get("weights")
    if w:
        keep.append(f"drawn by {w['by']} ({w['scheme']}, {w['direction']}: the best tenth {w['top_decile_share']:.0%} of "
                    f"draws, mean {w['mean']:.3g} -> {w['weighted_mean']:.3g} as drawn)")  # fmt: skip
    keep = "".join(f"; {k}" for k in keep if k)
    lines = [f"# Fine-tuning {report['base']} on {report['data']}", "",
             f"{report['n_train']} training molecules (validation taken from them), {report['n_held_out']} held out, "
             f"{report['too_long_skipped']} skipped as too long; freeze {freeze}{trained}{keep}; {steps}; {context}"
             + (f"; new tokens {new}" if new else "") + f"; {report['eval_samples']} samples per model, seed {report['seed']}.",
             "", "| figure | before | after |", "|---|---|---|"]  # fmt: skip
    for key in REPORT_KEYS:
        if key in b or key in a:
            lines.append(f"| {key} | {_fmt(b.get(key))} | {_fmt(a.get(key))} |")
    pm = report.get("property_model")
    if pm:
        fit = (f"; on the held-out molecules RMSE {pm['held_out_rmse']:.3f}, Spearman {pm['held_out_spearman']:.2f}"
               if "held_out_rmse" in pm else "")  # fmt: skip
        lines += ["", f"property_*: the valid samples' {pm['target']} as predicted by {pm['features']} + {pm['head']}"
                  + (f" ({pm['path']})" if "path" in pm else f" fitted to the {pm['fitted_on']} training molecules")
                  + fit + "."]  # fmt: skip
    for i, r in enumerate(report.get("rounds") or []):
        lines += [""] if i == 0 else []
        lines.append(f"Round {r['round']}: {r['new_valid']} new valid molecules of {r['sampled']} samples, predicted "
                     f"{r['samples_predicted_mean']:.3f} on average; fine-tuned on the best {r['kept']} "
                     f"({r['kept_predicted_mean']:.3f}).")  # fmt: skip
    if report.get("forgetting"):
        lines += ["", f"Forgetting (after - before; MOSES NLL on {report['forgetting_molecules']} seeded MOSES test "
                  "molecules, FCD of the samples to MOSES test): "
                  + ", ".join(f"{k} {v:+.3f}" for k, v in report["forgetting"].items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)
