"""Targeted adversarial attacks, small and tested: PGD (L-inf) and Carlini-Wagner L2.

    >>> import torch
    >>> from netdissect.roles.attacks import pgd, cw_l2
    >>> _ = torch.manual_seed(0)
    >>> model_fn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))   # a tiny classifier
    >>> x = torch.rand(6, 3, 2, 2)                                        # 6 images of 2 x 2 px
    >>> target = (model_fn(x).argmax(1) + 1) % 3                          # another class for each
    >>> adv = pgd(model_fn, x, target, eps=0.5, alpha=0.1, steps=10)
    >>> bool((adv - x).abs().max() <= 0.5 + 1e-6), bool((model_fn(adv).argmax(1) == target).any())
    (True, True)
    >>> adv = cw_l2(model_fn, x, target, binary_steps=1, steps=10, lr=0.05, initial_const=1.0)
    >>> 0 <= float(adv.min()) <= float(adv.max()) <= 1
    True

Both work on images in [0, 1] (``model_fn`` normalises) and return images in
[0, 1].  ``torchattacks`` 3.5.1 installs with torch 2.14, but pins
``requests~=2.25.1`` (downgrading the environment's HTTP stack), so these
are implemented here following the papers: Madry et al. 2018 (targeted PGD:
steps of ``alpha * sign(grad)`` down the target's cross-entropy, projected on
the ``eps`` ball) and Carlini & Wagner 2017 (tanh change of variables, loss
``||delta||^2 + c * max(max_{i != t} Z_i - Z_t, -kappa)``, Adam, binary search
over ``c``; the defaults of foolbox 2, as PNAS used, except the iterations).
"""
from __future__ import annotations

import torch


def _logits(model_fn, x):
    return model_fn(x)


def pgd(model_fn, x: torch.Tensor, target: torch.Tensor, *, eps: float = 8 / 255, alpha: float = 1 / 255,
        steps: int = 40, random_start: bool = True, seed: int = 0) -> torch.Tensor:
    """Targeted L-inf PGD; the result stays within ``eps`` of ``x`` and in [0, 1]."""
    x = x.detach()
    g = torch.Generator(device="cpu").manual_seed(seed)
    adv = x.clone()
    if random_start:
        adv = (adv + (torch.rand(x.shape, generator=g) * 2 - 1).to(x) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(_logits(model_fn, adv), target)
            grad, = torch.autograd.grad(loss, adv)
        adv = adv.detach() - alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def cw_l2(model_fn, x: torch.Tensor, target: torch.Tensor, *, binary_steps: int = 5, steps: int = 1000,
          lr: float = 5e-3, initial_const: float = 1e-2, kappa: float = 0.0) -> torch.Tensor:
    """Targeted Carlini-Wagner L2; per image the smallest-L2 successful example found (else ``x``)."""
    x = x.detach()
    n = x.shape[0]
    eps = 1e-6
    w0 = torch.atanh((x * 2 - 1).clamp(-1 + eps, 1 - eps))
    const = torch.full((n,), float(initial_const), device=x.device)
    lo = torch.zeros(n, device=x.device)
    hi = torch.full((n,), float("inf"), device=x.device)
    best_l2 = torch.full((n,), float("inf"), device=x.device)
    best = x.clone()
    for _ in range(binary_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            with torch.enable_grad():
                adv = (torch.tanh(w) + 1) / 2
                z = _logits(model_fn, adv)
                zt = z.gather(1, target[:, None])[:, 0]
                other = z.masked_fill(torch.nn.functional.one_hot(target, z.shape[1]).bool(), -float("inf"))
                f = (other.max(1).values - zt).clamp(min=-kappa)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * f).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                ok = z.argmax(1) == target
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2.detach(), best_l2)
                best[better] = adv.detach()[better]
                found |= ok
        # binary search on c: smaller where it worked, larger where it did not
        hi = torch.where(found, torch.minimum(hi, const), hi)
        lo = torch.where(found, lo, torch.maximum(lo, const))
        const = torch.where(torch.isinf(hi), const * 10, (lo + hi) / 2)
    return best.detach()
