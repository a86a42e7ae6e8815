"""How the 3×3 convolutions are computed: direct (oneDNN/cuDNN) or NNPACK's Winograd.

``algorithm="direct"`` is torch's own convolution (``F.conv2d``; its adjoint
``F.conv_transpose2d``). ``algorithm="winograd"`` computes the convolutions from conv3_1 on
(:data:`WINOGRAD_FROM`; 74 % of the multiply-adds at any image size) with NNPACK's Winograd
transform F(6×6, 3×3), ~2× fewer operations, through torch's private
``torch._nnpack_spatial_convolution`` — the one optional backend, behind this module only.
``"auto"`` means direct (since issue 15, 2026-12-01). Whether Winograd pays depends on the CPU
(``benchmarks/bench_style.py``, ``docs/benchmarks.md``): on AMD Zen 4 it gave most of the fast
path's 1.5×; on the Intel Xeon (AVX-512) of the project's machines, where oneDNN's direct
convolutions are fast and NNPACK has no AVX-512 path, it is slower single-threaded (21 × 256²,
one thread: Grams 1.32× vs 1.03× a forward pass, NST 3.86× vs 3.05×). A CPU-dependent
``"auto"`` would make a run's bits depend on the machine that ran it, so ``"auto"`` is direct
everywhere and Winograd is an explicit choice (``algorithm="winograd"``) for CPUs where
``bench_style.py`` shows it pays. (Until then ``"auto"`` picked Winograd single-threaded on CPU
for tilts ≥ 192²: outputs of such runs differ from today's by float rounding.)

Accuracy: NNPACK's ~1e-5 relative error in conv1_x/conv2_x flips the sign of tiny gradient
elements on ~0.1 % of the golden pixels (measured); from conv3_1 on, no more than the direct
path does (``docs/style.md``, "Precision and algorithm").
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .sizing import nnpack_available, resolve_algorithm, use_winograd  # re-exported

__all__ = ["WINOGRAD_FROM", "conv3x3", "conv3x3_input_grad",
           "nnpack_available", "resolve_algorithm", "use_winograd"]

#: With ``algorithm="winograd"`` the convs from this ``features`` index on (conv3_1 …) run
#: through NNPACK (measured: earlier layers flip ~0.1 % of the golden pixels' sign steps).
WINOGRAD_FROM = 10


def _nnpack_conv(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    # NNPACK's batched path is several times slower than its single-image (inference) path.
    if h.shape[0] == 1:
        return torch._nnpack_spatial_convolution(h.contiguous(), w, b, [1, 1])
    return torch.cat([torch._nnpack_spatial_convolution(h[i:i + 1].contiguous(), w, b, [1, 1])
                      for i in range(h.shape[0])])


def conv3x3(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, replicate: bool,
            winograd: bool) -> torch.Tensor:
    """VGG's 3×3, stride-1 'same' convolution of ``h`` (B, Cin, H, W) -> (B, Cout, H, W).

    ``replicate``: pad by edge replication (the first layer), else zeros; ``winograd``: through
    NNPACK (zero padding only).
    """
    if replicate:
        return F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), weight, bias)
    if winograd:
        return _nnpack_conv(h, weight, bias)
    return F.conv2d(h, weight, bias, padding=1)


def conv3x3_input_grad(g: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor | None,
                       *, replicate: bool, winograd: bool, x: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Gradient w.r.t. the input of :func:`conv3x3`: its adjoint applied to ``g`` (B, Cout, H, W).

    ``weight_t`` (Cin, Cout, 3, 3) is ``weight`` flipped with Cin and Cout swapped (needed with
    ``winograd``: the adjoint of a 3×3 'same' conv is that conv); ``x`` is the conv's input
    (needed with ``replicate``, for the border fold's shape).
    """
    if replicate:
        # Adjoint of pad(replicate) ∘ conv(valid): full transpose, then fold the border back.
        gp = F.conv_transpose2d(g, weight)
        return torch.ops.aten.replication_pad2d_backward(gp, x.to(gp.dtype), [1, 1, 1, 1])
    if winograd:
        return _nnpack_conv(g, weight_t, None)
    return F.conv_transpose2d(g, weight, padding=1)
