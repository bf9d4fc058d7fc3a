r"""The metric of an adaptive optimizer, for proximal steps in that metric.

Adam's step is a preconditioned gradient step: with ``m_hat`` and ``v_hat``
the bias-corrected moments,

.. math::

    w^+ = w - \mathrm{lr}\,\hat m / d
        = \arg\min_x \langle \hat m, x\rangle + \frac{1}{2\,\mathrm{lr}} \sum_i d_i (x_i - w_i)^2,
    \qquad d = \sqrt{\hat v} + \mathrm{eps},

so the consistent proximal step for ``loss + strength * Omega`` after it is
the prox in the metric ``d``:

.. math::

    x = \arg\min_x \tfrac12 \sum_i d_i (x_i - w^+_i)^2 + \mathrm{lr}\,\mathrm{strength}\,\Omega(x),

which proxlib's operators compute with ``metric=d`` (e.g.
``proxlib.prox_group_lasso(w, lam, lr * strength, metric=adam_metric(opt, w))``).
With a constant ``d`` it is the Euclidean prox with step ``lr * strength / d``.

:func:`adam_metric` returns ``d`` exactly as ``torch.optim.Adam`` (and
``AdamW``) forms its denominator, bit for bit.
"""

from __future__ import annotations

import torch

__all__ = ["adam_metric"]


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    raise ValueError("param is not in any of the optimizer's parameter groups")


def adam_metric(optimizer: torch.optim.Optimizer, param: torch.Tensor, *, assume_adam: bool = False) -> torch.Tensor:
    r"""Adam's diagonal metric ``d`` for ``param``, after ``optimizer.step()``.

    .. math::

        d = \frac{\sqrt{s}}{\sqrt{1 - \beta_2^{\,t}}} + \mathrm{eps},

    with ``s`` the state's ``exp_avg_sq`` (``max_exp_avg_sq`` with
    ``amsgrad=True``: the running maximum Adam divides by), ``t`` the state's
    step count (already incremented by the step just taken), and ``beta2``,
    ``eps`` from the parameter's group.  This is ``sqrt(v_hat) + eps`` with
    ``v_hat = s / (1 - beta2^t)``, formed with the same operations in the same
    order as torch's default (single-tensor and ``foreach``) Adam, so that
    ``w_before - lr * m_hat / d`` reproduces ``optimizer.step()`` bit for bit
    on CPU (``m_hat = exp_avg / (1 - beta1^t)``; see the tests).  The
    ``capturable`` and ``fused`` implementations form the same quantity with
    other roundings (a few units in the last place); they keep ``t`` on the
    parameter's device, so for them the bias correction is formed there, in
    float64 with a square root as theirs (Python's ``** 0.5`` above is the C
    library's pow, which can differ from it in the last bit), and no value
    is read back to the host.

    AdamW's decoupled weight decay (``w <- w (1 - lr wd)`` before the update)
    and Adam's coupled one (``wd w`` added to the gradient, hence to the
    moments) do not change how ``d`` is formed from the state.

    Parameters
    ----------
    optimizer : torch.optim.Adam or torch.optim.AdamW (or a subclass)
        Other optimizers are refused (NAdam, RAdam and Adamax keep moments
        of the same names but divide by other quantities) unless
        ``assume_adam=True`` says that their state and denominator are Adam's.
    param : torch.Tensor
        A parameter of ``optimizer`` on which ``step()`` has been called.

    Returns
    -------
    A new tensor of ``param``'s shape, dtype and device, > 0 where eps > 0.

    Raises
    ------
    TypeError
        ``optimizer`` is not Adam/AdamW (without ``assume_adam``), or
        ``param`` is complex.
    ValueError
        ``param`` is not in the optimizer, or has no state yet (no step taken).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not (assume_adam or isinstance(optimizer, torch.optim.Adam)):
        raise TypeError(
            f"adam_metric needs torch.optim.Adam or AdamW, got {type(optimizer).__name__} "
            "(pass assume_adam=True if its state and denominator are Adam's)"
        )
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"param must be a tensor, got {type(param).__name__}")
    if torch.is_complex(param):
        raise TypeError("adam_metric: complex parameters are not supported")
    return denominator(_group_of(optimizer, param), optimizer.state.get(param, {}))


def denominator(group: dict, state: dict) -> torch.Tensor:
    """:func:`adam_metric` from the parameter's ``group`` and ``state`` (no
    checks of the optimizer or the parameter: for callers that made them
    once, such as ``ProximalStep(metric="adam")``); ValueError when the state
    has no second moment yet.  (:func:`denominators` of the one tensor: the
    same operations on every device as for many, whose division by the bias
    correction is torch's multi-tensor one, as in its default ``foreach``
    Adam on a GPU.)"""
    return denominators([(group, state)])[0]


def denominators(entries: list) -> list:
    """:func:`denominator` of each ``(group, state)`` of ``entries``, the same
    values, with the tensors that share a bias correction, eps, device and
    dtype formed together by three multi-tensor operations
    (``torch._foreach_*``: a few launches on a GPU for all of them instead of
    three per tensor; on the CPU the same operations tensor by tensor)."""
    out: list = [None] * len(entries)
    together: dict = {}
    counts = _host_step_counts(entries)
    for i, (group, state) in enumerate(entries):
        moment, b, eps = _denominator_terms(group, state, counts.get(i))
        if isinstance(b, float) and isinstance(eps, float):
            together.setdefault((b, eps, moment.device, moment.dtype), []).append((i, moment))
        else:
            with torch.no_grad():
                out[i] = (moment.sqrt() / b).add_(eps)
    with torch.no_grad():
        for (b, eps, _, _), members in together.items():
            d = torch._foreach_sqrt([moment for _, moment in members])
            torch._foreach_div_(d, b)
            torch._foreach_add_(d, eps)
            for (i, _), di in zip(members, d):
                out[i] = di
    return out


def _host_step_counts(entries: list) -> dict:
    """The step counts that torch's Adam reads on the host (CPU tensors, not
    fused or capturable), read together: {entry index: the count as a
    Python float}, the values ``.item()`` gives one by one (a float32
    count widens exactly), in one read instead of one per tensor (each a
    dispatch on the host, whose time is a GPU step's)."""
    found = {}
    for i, (group, state) in enumerate(entries):
        step = state.get("step")
        if (isinstance(step, torch.Tensor) and step.device.type == "cpu" and step.dim() == 0
                and not (group.get("fused") or group.get("capturable"))):
            found[i] = step
    if len(found) < 2:
        return {}
    return dict(zip(found, torch.stack(list(found.values())).tolist()))


def _denominator_terms(group: dict, state: dict, count: float | None = None) -> tuple:
    """(s, sqrt(1 - beta2^t), eps) of :func:`adam_metric`'s formula, as
    torch's Adam forms them: the bias correction a Python float where the
    step count is on the host, a float64 tensor on its device otherwise.
    ``count``: the host's step count already read (:func:`_host_step_counts`)."""
    amsgrad = bool(group.get("amsgrad", False))
    key = "max_exp_avg_sq" if amsgrad else "exp_avg_sq"
    if key not in state or "step" not in state:
        raise ValueError(f"the optimizer has no {key!r} for this parameter yet: call adam_metric after optimizer.step()")
    _, beta2 = group["betas"]
    eps = group["eps"]
    step = state["step"]
    if isinstance(beta2, torch.Tensor) and beta2.dim() != 0:
        beta2 = beta2.squeeze()  # as torch.optim.optimizer._to_scalar
    if isinstance(step, torch.Tensor) and (group.get("fused") or group.get("capturable")):
        # fused and capturable Adam keep the step count on the parameter's
        # device: the same formula in float64 tensor operations there, so
        # that no read waits for the device (with a square root, as theirs)
        with torch.no_grad():
            return state[key], torch.sqrt(1 - beta2 ** step.to(torch.float64)), eps
    if count is not None:
        step = count
    step = step.item() if isinstance(step, torch.Tensor) else step  # as torch.optim.adam's _get_value
    # torch.optim.adam._single_tensor_adam (and _multi_tensor_adam, capturable=False):
    #   bias_correction2 = 1 - beta2 ** step
    #   bias_correction2_sqrt = bias_correction2 ** 0.5
    #   denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    bias_correction2 = 1 - beta2**step
    return state[key], bias_correction2**0.5, eps
