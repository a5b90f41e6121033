"""The mean teacher: an exponential moving average of the student's weights.

Tarvainen & Valpola 2017, "Mean teachers are better role models: Weight-averaged consistency targets improve
semi-supervised deep learning" (NeurIPS): after every optimiser step the teacher's parameters move towards the
student's, ``theta' <- decay * theta' + (1 - decay) * theta``; the teacher's predictions, averaged over many
students, are steadier targets than the student's own. The EMA is the one line of that update over the
parameters (``Tensor.lerp_``). torch's ``AveragedModel`` does the same for parameters but either copies or
averages the student's buffers with them; here the teacher keeps BatchNorm statistics of its own (the
target's, see :class:`~emfm.adapt.batchnorm.TwoDomains`), which the student does not hold.
"""

from __future__ import annotations

import torch
from torch import nn


def as_teacher(module: nn.Module) -> nn.Module:
    """``module`` (a copy of the student) in evaluation mode, where no gradient reaches it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Move every teacher parameter ``1 - decay`` of the way to the student's (same names, same shapes)."""
    current = dict(student.named_parameters())
    for name, p in teacher.named_parameters():
        p.lerp_(current[name].detach().to(p.dtype), 1.0 - float(decay))
