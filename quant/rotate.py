"""Random Hadamard rotation of the residual stream, norms fused (QuaRot-style).

Ashkboos et al., "QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs" (2024), after SliceGPT's
computational invariance: with RMSNorm, rms(x·Q) = rms(x)·Q for any orthogonal Q. So once each
norm's scale is fused into the Linear layers that read it, the whole residual stream can be
expressed in a rotated basis: the embedding and every layer reading the stream get W·Q, every
layer writing it gets Qᵀ·W, and the function is unchanged. A random Hadamard Q spreads each
weight row's outliers over all channels, which is what makes low-bit weights (and activations)
quantize well. QuaRot also rotates each attention head's values offline (v rows by Hᵀ, the
output projection's columns by H); that is done here too. The down projection's input would need
an online Hadamard (its activation is not linear in the stream), so it is left as is.

The output matrix is tied to the embedding; instead of untying it, the final norm becomes
`RotatedOutputNorm`: rms(x)·M with M = Qᵀ·diag(g)·Q, so logits = rms(x)·M·(E·Q)ᵀ = rms(x_orig)·diag(g)·Eᵀ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from v2m.errors import V2MError

from . import structure


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(math.isqrt(n)) + 1))


def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def paley(q: int) -> torch.Tensor:
    """Paley construction I: a Hadamard matrix of order q + 1 for a prime q ≡ 3 (mod 4)."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in residues else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jacobsthal = chi[(idx[None, :] - idx[:, None]) % q]
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1.0
    s[1:, 0] = -1.0
    s[1:, 1:] = jacobsthal
    return s + torch.eye(q + 1, dtype=torch.float64)


def hadamard(n: int) -> torch.Tensor | None:
    """A ±1 Hadamard matrix of order n (Sylvester 2^k, or Paley(q) ⊗ Sylvester 2^k), or None if these constructions miss n."""
    k = 1
    while n % (2 * k) == 0:
        k *= 2
    while k >= 1:
        m = n // k
        if m == 1:
            return sylvester(n)
        if _is_prime(m - 1) and (m - 1) % 4 == 3:
            return torch.kron(paley(m - 1), sylvester(k))
        k //= 2
    return None


def random_hadamard(n: int, seed: int) -> tuple[torch.Tensor, str]:
    """An orthogonal n×n matrix: a Hadamard matrix with random sign flips, scaled by 1/√n.

    Falls back to a random orthogonal matrix (QR of a Gaussian) when no Hadamard of order n is
    constructed here; the second value says which it is.
    """
    gen = torch.Generator().manual_seed(seed)
    h = hadamard(n)
    if h is None:
        qmat, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        return qmat * torch.sign(torch.diag(r))[None, :], "random orthogonal (no Hadamard of this order)"
    signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1
    return (signs[:, None] * h) / math.sqrt(n), "random Hadamard"


class RotatedOutputNorm(nn.Module):
    """RMSNorm followed by M = Qᵀ·diag(g)·Q: the final norm of a rotated model (see the module docstring)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.mix = nn.Parameter(torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed @ self.mix.float()).type_as(x)


@torch.no_grad()
def rotate_model(model: nn.Module, seed: int = 0) -> dict:
    """Rotate a v2m transformer in place (float weights); returns what was done, for the metadata."""
    parts = structure.blocks(model)
    if not parts:
        raise V2MError("--method rotate needs a v2m transformer model (it rotates the residual stream between blocks)")
    if model.config.norm != "rms":
        raise V2MError("--method rotate needs RMSNorm (rotation does not commute with LayerNorm's mean subtraction); "
                       "this model uses LayerNorm", "use --method gptq or rtn for this model")
    d = model.config.d_model
    q, kind = random_hadamard(d, seed)
    q = q.to(model.embed.weight.device)
    h_head, _ = random_hadamard(parts[0].head_dim, seed + 1)
    h_head = h_head.to(q.device)

    def mat(w):
        return w.double()

    model.embed.weight.copy_((mat(model.embed.weight) @ q).to(model.embed.weight.dtype))
    for p in parts:
        for norm, reader in ((p.norm1, p.qkv), (p.norm2, p.up)):
            fused = mat(reader.weight) * mat(norm.weight)[None, :]
            reader.weight.copy_((fused @ q).to(reader.weight.dtype))
            norm.weight.fill_(1.0)
        # per-head rotation of the values (rows of v in qkv) and the output projection's columns
        v = mat(p.qkv.weight[2 * d:]).reshape(p.n_heads, p.head_dim, d)
        p.qkv.weight[2 * d:] = torch.einsum("ji,hjk->hik", h_head, v).reshape(d, d).to(p.qkv.weight.dtype)
        o = mat(p.out.weight).reshape(d, p.n_heads, p.head_dim)
        rotated_out = torch.einsum("nhj,ji->nhi", o, h_head).reshape(d, d)
        for writer, w in ((p.out, rotated_out), (p.down, mat(p.down.weight))):
            writer.weight.copy_((q.T @ w).to(writer.weight.dtype))
            if writer.bias is not None:
                writer.bias.copy_((q.T @ mat(writer.bias)).to(writer.bias.dtype))
    final = RotatedOutputNorm(d, eps=getattr(model.norm, "eps", 1e-6)).to(q.device)
    final.mix.copy_((q.T @ torch.diag(mat(model.norm.weight)) @ q).float())
    model.norm = final
    return {"residual": kind, "dim": d, "heads": "random Hadamard per head (values, output projection)", "seed": seed}


def prepare_rotated_skeleton(model: nn.Module) -> None:
    """Give a freshly built model the module layout of a rotated one, before loading its weights."""
    model.norm = RotatedOutputNorm(model.config.d_model, eps=getattr(model.norm, "eps", 1e-6))
