"""Training through Lightning: the one Trainer builder, checkpoints, resume and interrupts.

:func:`pretrain` takes a run config (``molgen.config``) of any task (pretrain, finetune, distill),
asks the task registered for its ``model_type`` for a LightningModule and a LightningDataModule,
and trains with AdamW, linear warmup + cosine decay, gradient clipping, bf16 autocast on CUDA,
step-based validation, a resumable checkpoint every few minutes and a shippable export folder
(:func:`molgen.models.hub.save_pretrained`). Lightning's ``.ckpt`` files (pickle) stay in the
run directory; only the export folder is ever shipped. Ctrl-C or SIGTERM writes
``checkpoints/interrupted.ckpt`` of the step reached and raises :class:`TrainingInterrupted`;
``resume=True`` continues from the newer of it and the periodic ``last.ckpt``.

A model type becomes trainable with one :func:`register_task` call in its module under
``molgen/train/`` (model class, run config, builder); the builder returns a subclass of
:class:`PretrainModule` (implement ``step_loss``). DDP needs no code change: set
``strategy = "ddp"`` and launch with ``torchrun``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from molgen.config import RunConfig, load_config
from molgen.errors import ConfigError
from molgen.files import atomic_path

__all__ = ["pretrain", "register_task", "run_configs", "PretrainModule", "export", "cosine_schedule", "shuffle_generator",
           "TrainingInterrupted", "resume_checkpoint", "build_trainer"]  # fmt: skip

LAST_CKPT, INTERRUPT_CKPT = "last.ckpt", "interrupted.ckpt"  # under <run_dir>/checkpoints

@dataclass(frozen=True)
class Trainable:
    """A model type's training: its network class, run config and ``build(config) -> (module, datamodule)``."""

    model: type
    run_config: type[RunConfig]
    build: Callable


_TASKS: dict[str, Trainable] = {}


def register_task(model: type, run_config: type[RunConfig], build: Callable) -> None:
    """Make a model type trainable: the one registration that ``molgen pretrain``, the run-config
    check (:func:`molgen.config.parse_config`) and every task (pretrain, finetune, distill) use.

    Args:
        model: the network class, with ``model_type`` and ``config_class`` (its config dataclass);
            it registers itself for loading with :func:`molgen.models.hub.register_model`.
        run_config: a :class:`~molgen.config.RunConfig` with ``model_type: Literal[<model_type>]``
            and a ``model`` section made by :func:`molgen.config.model_section` from ``model.config_class``.
        build: ``build(config) -> (PretrainModule, LightningDataModule)``.
    """
    from molgen.models.hub import model_class

    if model_class(model.model_type) is not model:
        raise TypeError(f"{model.__name__} is not the model registered for {model.model_type!r} (hub.register_model)")
    fields = run_config.model_fields
    section = fields["model"].annotation if "model" in fields else None
    if getattr(section, "shape_class", None) is not model.config_class:
        raise TypeError(f"{run_config.__name__}.model must be model_section({model.config_class.__name__})")
    if typing.get_args(fields["model_type"].annotation) != (model.model_type,):
        raise TypeError(f"{run_config.__name__}.model_type must be Literal[{model.model_type!r}]")
    _TASKS[model.model_type] = Trainable(model, run_config, build)


def run_configs() -> dict[str, type[RunConfig]]:
    """``model_type`` -> run config class, for every trainable model type."""
    return {name: t.run_config for name, t in _TASKS.items()}


def _task(model_type: str) -> Callable:
    if model_type not in _TASKS:
        raise ConfigError(f"no training task for model_type {model_type!r}; known: {sorted(_TASKS)}")
    return _TASKS[model_type].build


def shuffle_generator(datamodule: L.LightningDataModule) -> torch.Generator:
    """The train loader's shuffling generator, seeded with ``seed + global step``: a resumed run
    reshuffles instead of replaying the first batches of the epoch it stopped in (the sampler's
    position itself is not checkpointed)."""
    trainer = datamodule.trainer
    step = trainer.global_step if trainer is not None else 0
    return torch.Generator().manual_seed(datamodule.config.trainer.seed + step)


def cosine_schedule(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class PretrainModule(L.LightningModule):
    """Shared training logic: optimizer, schedule, token counting, provenance.

    Subclasses set ``self.model`` (the ``nn.Module`` that gets exported) and implement
    ``step_loss(batch) -> (loss, n_tokens)``; ``n_tokens`` is what ``tokens_seen`` counts
    (tokens for a language model, atoms or graphs for another).
    """

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.tokens_seen = 0
        self.data_info: dict = {}
        self.last_val: dict | None = None  # {"step", "val_nll"} of the latest validation, kept in the provenance
        self.frozen: list[torch.nn.Module] = []  # parts a freeze policy keeps in eval mode (molgen.train.freeze)
        # with early stopping: {"step", "val_nll", "state"} of the best validation, the weights export() writes
        self.best: dict | None = None

    def train(self, mode: bool = True):
        # Lightning switches the whole module to training at the start and after each validation;
        # frozen parts stay in eval mode (no dropout, no running statistics)
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self

    def step_loss(self, batch) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def save_model(self, directory: Path) -> Path:
        """Write ``self.model`` as the run's export folder (a task may write another kind, e.g. an adapter)."""
        from molgen.models.hub import save_pretrained

        return save_pretrained(self.model.eval(), directory, self.provenance())

    def training_step(self, batch, batch_idx):
        loss, n = self.step_loss(batch)
        if self.trainer.world_size > 1:
            n = int(self.trainer.strategy.reduce(torch.tensor(float(n), device=self.device), reduce_op="sum"))
        self.tokens_seen += int(n)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, n = self.step_loss(batch)
        # weight by tokens so that val_nll is per token whatever the batch lengths
        self.log("val_nll", loss, batch_size=max(int(n), 1), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        val = self.trainer.callback_metrics.get("val_nll")
        if val is not None and not self.trainer.sanity_checking:
            self.last_val = {"step": int(self.global_step), "val_nll": round(float(val), 5)}
            tc = self.config.trainer
            if tc.patience and (self.best is None or float(val) < self.best["val_nll"] - tc.min_delta):
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                self.best = {"step": int(self.global_step), "val_nll": float(val), "state": state}

    def configure_optimizers(self):
        opt = self.config.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        # no weight decay on biases and norms (1-D tensors), as in GPT-2
        # nor on a table of which only new rows train (decay would shrink its frozen rows; molgen.models.lora)
        decays = [p.dim() >= 2 and not getattr(p, "frozen_rows", 0) for p in params]
        groups = [
            {"params": [p for p, d in zip(params, decays, strict=True) if d], "weight_decay": opt.weight_decay},
            {"params": [p for p, d in zip(params, decays, strict=True) if not d], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        total, warmup, ratio = self.config.trainer.max_steps, opt.warmup_steps, opt.min_lr / opt.lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_schedule(s, warmup, total, ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["molgen"] = {"tokens_seen": self.tokens_seen, "config": self.config.model_dump(), "last_val": self.last_val,
                                "best": self.best}  # fmt: skip

    def on_load_checkpoint(self, checkpoint):
        self.tokens_seen = int(checkpoint.get("molgen", {}).get("tokens_seen", 0))
        self.last_val = checkpoint.get("molgen", {}).get("last_val")
        self.best = checkpoint.get("molgen", {}).get("best")

    def provenance(self) -> dict:
        return {
            "data": self.data_info,
            "seed": self.config.trainer.seed,
            "steps": int(self.global_step),
            "tokens_seen": int(self.tokens_seen),
            # travels with the weights (the run's logs stay on the machine that trained it)
            "validation": self.last_val if self.best is None else {"step": self.best["step"], "val_nll": round(self.best["val_nll"], 5)},
            **({"early_stopping": {"best_step": self.best["step"], "last_step": int(self.global_step),
                                   "patience": self.config.trainer.patience}} if self.best else {}),  # fmt: skip
            "parent": self.config.init_from,
            "run": self.config.name,
            "train_config": self.config.model_dump(),
        }


def export(module: PretrainModule, directory: str | Path | None = None) -> Path:
    """Write the module's model as a shippable checkpoint folder (keeps an existing card); with early
    stopping (``trainer.patience``), the weights of the best validation so far."""
    directory = Path(directory or module.config.export_dir)
    was_training = module.training
    current = None
    if module.best is not None:
        current = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        module.model.load_state_dict(module.best["state"])
    try:
        path = module.save_model(directory)
    finally:
        if current is not None:
            module.model.load_state_dict(current)
        module.train(was_training)
    return path


class _ExportOnCheckpoint(Callback):
    """Refresh the export folder whenever a resumable checkpoint is written."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.is_global_zero:
            export(pl_module)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) or SIGTERM; ``checkpoint`` is where ``resume=True`` continues from.

    Attributes:
        step: the optimizer step training stopped at.
        checkpoint: the checkpoint written on the interrupt (or, with no step taken since the
            start, the one the run started from); ``None`` when there is nothing to resume.
        signum: ``signal.SIGINT`` or ``signal.SIGTERM``.
    """

    def __init__(self, step: int, checkpoint: Path | None, signum: int):
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}; resume=True continues from it" if checkpoint else "nothing to resume"
        super().__init__(f"training stopped by {name} at step {step}: {where}")


class _SaveOnInterrupt(Callback):
    """Write ``interrupted.ckpt`` when Ctrl-C or SIGTERM stops training (Lightning's ``on_exception``).

    Lightning catches KeyboardInterrupt in ``trainer.fit``, ignores further SIGINTs, calls every
    callback's ``on_exception`` and then ``sys.exit(1)``; on SIGTERM (SLURM's warning before a kill)
    its loops raise ``SIGTERMException`` at the next batch boundary, calls ``on_exception`` and
    re-raises. The file is written to a temporary name and renamed, so a kill during the save leaves
    the previous checkpoints as they were. Nothing is written before the first new step: a Ctrl-C
    while a resumed run is still loading must not write a step-0 file newer than the real one.

    :meth:`sigterm` is the process's SIGTERM handler for the whole of :func:`pretrain`. Lightning
    installs its own during training and calls an earlier handler after it; one that raised
    KeyboardInterrupt (as the CLI's does for other commands) would stop the step half done, so
    this one does nothing once training runs and leaves the stop to Lightning's batch boundary.
    Before that (reading data, restoring a checkpoint) Lightning would wait for a batch: it
    raises KeyboardInterrupt.
    """

    def __init__(self, path: Path):
        self.path = path
        self.start_step: int | None = None  # set once the training loop runs
        self.signum: int | None = None
        self.saved: Path | None = None
        self.got_sigterm = False

    def sigterm(self, signum, frame) -> None:
        self.got_sigterm = True
        if self.start_step is None:
            raise KeyboardInterrupt

    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException) or (isinstance(exception, KeyboardInterrupt) and self.got_sigterm):
            self.signum = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.signum = signal.SIGINT
        else:
            return
        if self.start_step is None or trainer.global_step <= self.start_step:
            return
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)
        else:  # a collective call; only rank 0 writes
            trainer.save_checkpoint(self.path, weights_only=False)
        self.saved = self.path


def _set_sigterm(handler):
    """Install a SIGTERM handler (``None``: the default) and return the previous one; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.SIG_DFL if handler is None else handler)


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``resume=True`` continues from: the newer of the periodic ``last.ckpt`` and the
    ``interrupted.ckpt`` written on Ctrl-C / SIGTERM (``None`` when the run has neither)."""
    found = [p for p in (Path(run_dir) / "checkpoints" / n for n in (LAST_CKPT, INTERRUPT_CKPT)) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


class _PrintProgress(Callback):
    """One plain line per ``every`` steps (loss, lr, tokens/s): readable in a nohup log."""

    def __init__(self, every: int):
        self.every = every
        self._t0, self._tok0 = time.perf_counter(), 0

    def on_train_start(self, trainer, pl_module):
        self._t0, self._tok0 = time.perf_counter(), pl_module.tokens_seen
        if trainer.is_global_zero and trainer.global_step:
            print(f"resumed at step {trainer.global_step}", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every:
            return
        now = time.perf_counter()
        rate = (pl_module.tokens_seen - self._tok0) / max(now - self._t0, 1e-9)
        self._t0, self._tok0 = now, pl_module.tokens_seen
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        print(
            f"step {step} loss {loss:.4f} lr {lr:.2e} tok/s {rate:,.0f} tokens {pl_module.tokens_seen:,} "
            f"{time.strftime('%H:%M:%S')}",
            flush=True,
        )

    def on_validation_end(self, trainer, pl_module):
        val = trainer.callback_metrics.get("val_nll")
        if trainer.is_global_zero and val is not None and not trainer.sanity_checking:
            print(f"step {trainer.global_step} val_nll {float(val):.4f}", flush=True)


def _precision(cfg) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    on_gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu else "32-true"


# Lightning's advice that does not apply to a molgen run (a small fine-tuning set has few batches per
# epoch on purpose; the deprecation is inside Lightning itself), kept off the chemist's screen
_LIGHTNING_NOISE = (r"The number of training batches \(\d+\) is smaller than the logging interval",
                    r".*isinstance\(treespec, LeafSpec\)` is deprecated", r"`weights_only` was not set")


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up lines (GPU/TPU available, an advert for a logging service) at WARNING only;
    molgen prints its own line of what is trained where."""
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def build_trainer(config: RunConfig, on_interrupt: _SaveOnInterrupt | None = None) -> L.Trainer:
    """The Lightning Trainer for a run config (checkpointing, logging, schedule, DDP, a checkpoint on Ctrl-C)."""
    tc, run_dir = config.trainer, Path(config.run_dir)
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step{step}",
            auto_insert_metric_name=False,
            train_time_interval=timedelta(minutes=tc.checkpoint_minutes),
            save_last=True,
            save_top_k=1,
        ),
        _PrintProgress(tc.log_every_steps),
        on_interrupt or _SaveOnInterrupt(run_dir / "checkpoints" / INTERRUPT_CKPT),
    ]
    if tc.export_on_checkpoint:
        callbacks.append(_ExportOnCheckpoint())
    if tc.patience:  # counted in validations (every val_every_steps), not epochs
        callbacks.append(EarlyStopping("val_nll", min_delta=tc.min_delta, patience=tc.patience, mode="min",
                                       check_on_train_epoch_end=False))  # fmt: skip
    return L.Trainer(
        default_root_dir=run_dir,
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        precision=_precision(tc),
        max_steps=tc.max_steps,
        max_epochs=-1,
        max_time=timedelta(minutes=tc.max_minutes) if tc.max_minutes else None,
        gradient_clip_val=config.optim.grad_clip or None,
        val_check_interval=tc.val_every_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=tc.log_every_steps,
        logger=CSVLogger(run_dir, name="logs"),  # logs/version_<n>: one per start or resume
        callbacks=callbacks,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=True,
    )


def pretrain(config: RunConfig | str | Path, resume: bool = False) -> Path:
    """Train a model from a run config (or its TOML path), whatever its task: pretrain, finetune
    (``init_from``) or distill (``[distill]``); returns the export folder.

    Args:
        config: a validated config or the path of a TOML file.
        resume: continue from the newer of ``<run_dir>/checkpoints/last.ckpt`` (periodic) and
            ``interrupted.ckpt`` (written on Ctrl-C or SIGTERM): optimizer, schedule, step,
            data position of the epoch restarted, elapsed time all restored.

    Raises:
        ConfigError: bad config; ``resume`` without a checkpoint; a fresh start over a run
            directory that already has checkpoints.
        TrainingInterrupted: Ctrl-C (SIGINT) or SIGTERM stopped training; a checkpoint of the
            step reached was written first (its path is in the exception).
    """
    source = None
    if not isinstance(config, RunConfig):
        source, config = Path(config), load_config(config)
    tc, run_dir = config.trainer, Path(config.run_dir)
    last = run_dir / "checkpoints" / LAST_CKPT
    start = resume_checkpoint(run_dir)
    if resume and start is None:
        raise ConfigError(f"--resume: no checkpoint at {last} (nor {INTERRUPT_CKPT} beside it); start without --resume")
    if not resume and start is not None:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or change `name`/`run_dir`")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    saver = _SaveOnInterrupt(run_dir / "checkpoints" / INTERRUPT_CKPT)
    trainer = None
    previous = _set_sigterm(saver.sigterm)
    try:
        L.seed_everything(tc.seed, workers=True, verbose=False)
        module, datamodule = _task(config.model_type)(config)
        with _quiet_lightning():
            trainer = build_trainer(config, saver)
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            if source is not None and source.resolve() != (run_dir / "config.toml").resolve():
                shutil.copyfile(source, run_dir / "config.toml")
        print(f"training {config.model_type} ({config.task}) '{config.name}' -> {run_dir}" + (f" (resuming from {start})" if resume else ""),
              file=sys.stderr, flush=True)  # fmt: skip
        with warnings.catch_warnings(), _quiet_lightning():
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen on purpose
            for noise in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=noise)
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(start) if resume else None)
    except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into sys.exit(1)
        if saver.signum is None and not isinstance(err, KeyboardInterrupt):
            raise
        signum = saver.signum or (signal.SIGTERM if saver.got_sigterm else signal.SIGINT)
        step = trainer.global_step if trainer is not None else 0
        raise TrainingInterrupted(step, saver.saved or (start if resume else None), signum) from err
    finally:
        _set_sigterm(previous)
    trainer.save_checkpoint(last)  # the final state (all ranks call it; rank 0 writes), for a longer max_steps
    if trainer.is_global_zero:
        return export(module)
    return Path(config.export_dir)
