"""Adam on the image plus the bias-corrected moving average of the iterates (``docs/method.md §4``
items 5–6).

The Adam step is torch's own arithmetic: the functional ``torch.optim.adam.adam`` with
``foreach=False`` (the single-tensor path of ``torch.optim.Adam``), so results are bit-identical
to ``torch.optim.Adam`` (tested on CPU, and the single-tensor path is the same code on every
device). Not the ``torch.optim.Adam`` class itself: its first ``step()`` imports
``torch._dynamo``, measured at +1.6 s and +156 MB RSS in every Dask worker process, for nothing
this kernel uses. The moving average is Crowson's ``EMA`` module (style-transfer-pytorch):
float32 buffers value/decay/accum, updated with x₀ first.
"""
from __future__ import annotations

import torch
from torch.optim.adam import adam

from ...params.nst import NSTParams

__all__ = ["AdamEMA"]


class AdamEMA:
    """Adam on ``x`` (in place, clamped to [0, 1] after each step) plus the bias-corrected EMA of
    the iterates started at ``x0``.

    The first step is ``x0 − lr·g/(|g| + eps)``: only the sign of each gradient element
    matters, which is why two float32 gradients that differ by rounding can move a pixel by a
    whole step (``docs/style.md``, "Accuracy").

    Parameters
    ----------
    x : torch.Tensor (B, C, H, W) float32
        The start image in [0, 1]; updated in place.
    p : NSTParams
        ``lr``, ``betas``, ``eps`` and ``ema_decay`` are used.
    """

    def __init__(self, x: torch.Tensor, p: NSTParams) -> None:
        self.p = p
        self.x = x
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.step = torch.tensor(0.0)  # torch.optim.Adam's step counter (a CPU float tensor)
        # EMA as Crowson's `EMA` module: float32 buffers value/decay/accum, updated with x0.
        self.decay = torch.tensor(p.ema_decay, dtype=torch.float32)
        self.accum = torch.tensor(1.0, dtype=torch.float32)
        self.avg = torch.zeros_like(x)
        self._ema_update()

    def _ema_update(self) -> None:
        self.accum *= self.decay
        self.avg *= self.decay.to(self.avg.device)
        self.avg += (1 - self.decay).to(self.avg.device) * self.x

    def update(self, grad: torch.Tensor) -> None:
        """One Adam step with ``grad`` (shape of ``x``), clamp to [0, 1], update the average."""
        b1, b2 = self.p.betas
        with torch.no_grad():
            adam([self.x], [grad], [self.m], [self.v], [], [self.step], foreach=False,
                 amsgrad=False, beta1=b1, beta2=b2, lr=self.p.lr, weight_decay=0.0,
                 eps=self.p.eps, maximize=False)
        self.x.clamp_(0, 1)
        self._ema_update()

    def result(self) -> torch.Tensor:
        """(B, H, W): the bias-corrected average, clamped to [0, 1], mean over channels."""
        return (self.avg / (1 - self.accum).to(self.avg.device)).clamp_(0, 1).mean(1)
