"""Full 8-bit optimizers: AdamW, Lion and AdaBelief with block-wise quantized moments.

Paper: Dettmers, Lewis, Shleifer, Zettlemoyer. "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
https://arxiv.org/abs/2110.02861

Reference implementation: bitsandbytes-foundation/bitsandbytes@95f9af30 ``optim/adamw.py::AdamW8bit``,
``optim/lion.py::Lion8bit``
and the step ``backends/triton/kernels_optim.py::optimizer_update_8bit_blockwise_pytorch``. Each optimizer is
:func:`~gradtx.quantization.quantize_state.quantize_state` around a direction (Adam's, written here with
float32 scalars as the kernel has them; :func:`gradtx.scale_by_lion`), followed by decoupled weight decay
and the learning rate (:func:`gradtx.core.alias.decoupled`); the defaults are
bitsandbytes' (AdamW8bit: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2; Lion8bit: lr 1e-4, betas
(0.9, 0.99), weight decay 0; both: blocks of 256, tensors under 4096 elements in 32 bits).

Where gradtx differs:
  * Weight decay uses the parameter before the step (``θ ← θ − η(u + λθ)``), as the PyTorch reference and
    ``torch.optim.AdamW`` do; the CUDA kernel of ``AdamW8bit`` multiplies the already-updated parameter by
    ``1 − ηλ``, a difference of order ``η²λ``.
  * ``optax.adamw`` defaults ``weight_decay=1e-4``; gradtx follows bitsandbytes (and PyTorch) with 1e-2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, tree, validation
from gradtx.moment_scaling.adabelief import adabelief
from gradtx.quantization.quantize_state import quantize_state
from gradtx.sign_momentum.lion import scale_by_lion

_PAPER = "Dettmers et al., 8-bit Optimizers via Block-wise Quantization, ICLR 2022, arXiv:2110.02861"
_STATIC = ("mask", "block_size", "min_size", "quantize_mask", "stochastic_rounding", "seed")


def _scale_by_adam(b1: Any, b2: Any, eps: Any) -> optax.GradientTransformationExtraArgs:
  """Adam's direction as bitsandbytes' 8-bit kernel computes it, with a dtype-stable full-precision path.

  ``optax.scale_by_adam`` computes ``1 - b`` in Python float64 for a float ``b`` but in float32 for a traced
  one (1.3e-5 relative apart for 0.999), and promotes float16/bfloat16 moments to float32 when ``b`` is
  traced; here every scalar is float32 (as the kernel's ``1.0f - beta``), the arithmetic is in at least
  float32 and the moments keep their dtype. The state is an ``optax.ScaleByAdamState``.
  """

  def init_fn(params):
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32), mu=tree.zeros_like(params), nu=numerics.stats_zeros_like(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/adam_8bit_direction"):
      count = tree.safe_increment(state.count)
      mu = numerics.ema_upcast(state.mu, updates, b1)
      nu = numerics.ema_upcast(state.nu, updates, b2, order=2)
      bc1 = numerics.bias_correction_accurate(b1, count)
      sqrt_bc2 = jnp.sqrt(numerics.bias_correction_accurate(b2, count))
      eps32 = jnp.asarray(eps, jnp.float32)
      new_updates = jax.tree.map(
          lambda m, v, g: (m / (jnp.sqrt(v) / sqrt_bc2 + eps32) / bc1).astype(g.dtype), mu, nu, updates
      )
      return new_updates, optax.ScaleByAdamState(
          count=count, mu=tree.cast_like(mu, state.mu), nu=tree.cast_like(nu, state.nu)
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adamw_8bit(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 1e-2,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    quantize_mask: Any | Callable[[optax.Params], Any] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW whose moments are stored block-wise in 8 bits (bitsandbytes' ``AdamW8bit``).

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \theta_t &= \theta_{t-1} - \eta_t \left( \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
    + \lambda \theta_{t-1} \right)

  with ``m`` stored in the signed and ``v`` in the unsigned dynamic map, one float32 scale per block.
  State: 2 bytes per parameter plus 8 bytes per block (0.254× of float32 AdamW's 8 bytes with blocks of 256).

  Args:
    learning_rate: η, a float or an optax schedule (bitsandbytes: 1e-3 for AdamW8bit, 1e-4 for Lion8bit).
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: ε added to the square root of the second moment.
    weight_decay: λ, decoupled (a float or an optax schedule).
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    block_size: see :func:`gradtx.quantize_state`.
    min_size: see :func:`gradtx.quantize_state`.
    quantize_mask: see :func:`gradtx.quantize_state`.
    stochastic_rounding: see :func:`gradtx.quantize_state`.
    seed: see :func:`gradtx.quantize_state`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.mean((p - 3.0) ** 2)
    >>> tx = gradtx.adamw_8bit(learning_rate=0.1, weight_decay=0.0)
    >>> params = jnp.zeros(5000)  # 5000 >= min_size: 8-bit moments
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(100):
    ...   params, state = step(params, state)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization <https://arxiv.org/abs/2110.02861>`_,
    2022.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # eps = 0 divides 0 by 0 where a coordinate's gradient is 0 (m = v = 0), so eps > 0.
  validation.check_eps("eps", eps)
  direction = quantize_state(
      _scale_by_adam(b1, b2, eps),
      fields=("mu", "nu"),
      block_size=block_size,
      min_size=min_size,
      quantize_mask=quantize_mask,
      stochastic_rounding=stochastic_rounding,
      seed=seed,
  )
  return alias.decoupled(direction, learning_rate, weight_decay, mask)


def lion_8bit(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    quantize_mask: Any | Callable[[optax.Params], Any] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Lion whose momentum is stored block-wise in 8 bits (bitsandbytes' ``Lion8bit``).

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
    + \lambda \theta_{t-1}\right), \quad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

  with ``m`` stored in the signed dynamic map (:func:`gradtx.scale_by_lion` inside
  :func:`gradtx.quantize_state`). State: 1 byte per parameter plus 4 bytes per block.

  Args:
    learning_rate: η, a float or an optax schedule (bitsandbytes: 1e-3 for AdamW8bit, 1e-4 for Lion8bit).
    b1: interpolation rate of the direction.
    b2: decay rate of the momentum.
    weight_decay: λ, decoupled.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    block_size: see :func:`gradtx.quantize_state`.
    min_size: see :func:`gradtx.quantize_state`.
    quantize_mask: see :func:`gradtx.quantize_state`.
    stochastic_rounding: see :func:`gradtx.quantize_state`.
    seed: see :func:`gradtx.quantize_state`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.mean((p - 3.0) ** 2)
    >>> tx = gradtx.lion_8bit(learning_rate=0.05)
    >>> params = jnp.zeros(5000)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(200):
    ...   params, state = step(params, state)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization <https://arxiv.org/abs/2110.02861>`_,
    2022. Chen et al., `Symbolic Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_,
    2023.
  """
  direction = quantize_state(
      scale_by_lion(b1, b2),
      fields=("mu",),
      block_size=block_size,
      min_size=min_size,
      quantize_mask=quantize_mask,
      stochastic_rounding=stochastic_rounding,
      seed=seed,
  )
  return alias.decoupled(direction, learning_rate, weight_decay, mask)


def adabelief_8bit(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    weight_decouple: bool = True,
    fixed_decay: bool = False,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
    amsgrad: bool = False,
    eps_root: float | None = None,
    n_sma_threshold: float = 5,
    block_size: int = 256,
    min_size: int = 4096,
    quantize_mask: Any | Callable[[optax.Params], Any] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaBelief whose moments ``m``, ``s`` (and ``max s``) are stored block-wise in 8 bits.

  :func:`gradtx.adabelief` (official defaults and options) inside :func:`gradtx.quantize_state`, with ``m``
  in the signed and ``s`` in the unsigned dynamic map. bitsandbytes has no 8-bit AdaBelief; this follows
  its recipe for Adam. An ``s`` far below its block's largest (under ``3.25e-7`` of it) is stored as 0,
  dropping the ``ε`` AdaBelief accumulates in it; the step then rests on the fresh
  ``(1 − β2)(g − m)² + ε`` of that step, as the 8-bit Adam's rests on the fresh ``(1 − β2) g²``.

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`gradtx.adabelief`.
    b2: see :func:`gradtx.adabelief`.
    eps: see :func:`gradtx.adabelief`.
    weight_decay: see :func:`gradtx.adabelief`.
    mask: see :func:`gradtx.adabelief`.
    weight_decouple: see :func:`gradtx.adabelief`.
    fixed_decay: see :func:`gradtx.adabelief`.
    rectify: see :func:`gradtx.adabelief`.
    degenerated_to_sgd: see :func:`gradtx.adabelief`.
    amsgrad: see :func:`gradtx.adabelief` (its running maximum is quantized too).
    eps_root: see :func:`gradtx.adabelief`.
    n_sma_threshold: see :func:`gradtx.adabelief`.
    block_size: see :func:`gradtx.quantize_state`.
    min_size: see :func:`gradtx.quantize_state`.
    quantize_mask: see :func:`gradtx.quantize_state`.
    stochastic_rounding: see :func:`gradtx.quantize_state`.
    seed: see :func:`gradtx.quantize_state`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.mean((p - 3.0) ** 2)
    >>> tx = gradtx.adabelief_8bit(learning_rate=0.1)
    >>> params = jnp.zeros(5000)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(200):
    ...   params, state = step(params, state)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization <https://arxiv.org/abs/2110.02861>`_,
    2022. Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients
    <https://arxiv.org/abs/2010.07468>`_, 2020.
  """
  inner = adabelief(
      learning_rate,
      b1,
      b2,
      eps,
      weight_decay,
      mask,
      weight_decouple=weight_decouple,
      fixed_decay=fixed_decay,
      rectify=rectify,
      degenerated_to_sgd=degenerated_to_sgd,
      amsgrad=amsgrad,
      eps_root=eps_root,
      n_sma_threshold=n_sma_threshold,
  )
  return quantize_state(
      inner,
      fields=("mu", "nu", "nu_max"),
      block_size=block_size,
      min_size=min_size,
      quantize_mask=quantize_mask,
      stochastic_rounding=stochastic_rounding,
      seed=seed,
  )


registry.register(
    registry.OptimizerSpec(
        name="adamw_8bit",
        factory=adamw_8bit,
        test_kwargs={"learning_rate": 0.05, "weight_decay": 0.0, "min_size": 0},
        family="quantization",
        paper=_PAPER,
        reference="bitsandbytes-foundation/bitsandbytes@95f9af30 optim/adamw.py AdamW8bit; "
        "backends/triton/kernels_optim.py",
        static_args=_STATIC,
        state_per_param="2 bytes (uint8 m, v) + 8 bytes per block of 256",
        optax_counterpart=(optax.adamw, {"learning_rate": 0.05, "weight_decay": 0.0}),
    )
)

registry.register(
    registry.OptimizerSpec(
        name="lion_8bit",
        factory=lion_8bit,
        test_kwargs={"learning_rate": 0.03, "min_size": 0},
        family="quantization",
        paper=_PAPER,
        reference="bitsandbytes-foundation/bitsandbytes@95f9af30 optim/lion.py Lion8bit; "
        "backends/triton/kernels_optim.py",
        static_args=_STATIC,
        state_per_param="1 byte (uint8 m) + 4 bytes per block of 256",
        optax_counterpart=(optax.lion, {"learning_rate": 0.03, "weight_decay": 0.0}),
    )
)

registry.register(
    registry.OptimizerSpec(
        name="adabelief_8bit",
        factory=adabelief_8bit,
        test_kwargs={"learning_rate": 0.1, "rectify": False, "min_size": 0},
        family="quantization",
        paper=_PAPER + "; Zhuang et al., AdaBelief, NeurIPS 2020, arXiv:2010.07468",
        reference="bitsandbytes-foundation/bitsandbytes@95f9af30 8-bit recipe around gradtx.adabelief "
        "(official AdaBelief 0.2.1)",
        static_args=_STATIC
        + ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd", "amsgrad"),
        state_per_param="2 bytes (uint8 m, s; 3 with amsgrad) + 8 bytes per block of 256",
        optax_counterpart=(optax.adabelief, {"learning_rate": 0.1}),
    )
)
