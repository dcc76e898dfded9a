"""Training: the only place in molgen where a Lightning ``Trainer`` is built.

:mod:`molgen.train.base` holds the shared LightningModule, the Trainer builder, checkpoints,
resume and the interrupt checkpoint; each model type's task (data, LightningModule, run config)
lives in its own module here and registers itself with :func:`register_task` on import. Models
never import training: this package imports them.
"""

from __future__ import annotations

# each task module registers its model type on import (register_task)
from molgen.train import gpt, graph_vae
from molgen.train.base import (
    INTERRUPT_CKPT,
    LAST_CKPT,
    PretrainModule,
    Trainable,
    TrainingInterrupted,
    build_trainer,
    cosine_schedule,
    export,
    pretrain,
    register_task,
    resume_checkpoint,
    run_configs,
    shuffle_generator,
)

__all__ = ["pretrain", "register_task", "run_configs", "PretrainModule", "Trainable", "export", "cosine_schedule",
           "shuffle_generator", "TrainingInterrupted", "resume_checkpoint", "build_trainer", "LAST_CKPT",
           "INTERRUPT_CKPT", "gpt", "graph_vae"]  # fmt: skip
