"""Just One Byte: data-parallel zeroth-order training where replicas exchange one scalar per perturbation.

Paper: Zelikman, Huang, Liang, Haber, Goodman. "Just One Byte (per gradient): A Note on Low-Bandwidth
Decentralized Language Model Finetuning Using Shared Randomness", 2023. https://arxiv.org/abs/2306.10015

Reference implementation: ezelikman/justonebyte@19ba0897 ``app.py``. Every machine draws its own
perturbations from a seed made of (iteration, machine, sample), computes ``ĝ = (L(θ + εz) − L(θ − εz)) /
(2ε)`` on its own batch, and sends only the list of its ``ĝ``; every machine then regenerates all the other
machines' ``z`` from their seeds and applies ``θ ← θ − η Σ ĝ z / √N`` (``N`` = number of samples over all
machines; ``apply_all_grads`` with ``use_eps=False``). gradtx follows it with these differences:

* The seed of sample ``s`` of replica ``r`` at step ``t`` is ``fold_in(PRNGKey(seed), t, r, s)`` (the
  reference concatenates the decimal digits of iteration, timestamp offset and sample index).
* The exchange is one ``lax.all_gather`` of the replicas' ``(num_samples,)`` vectors of ``ĝ`` across
  ``axis_name`` (the reference polls each machine over HTTP). Every replica then holds the same scalars
  and computes the same update, so the params stay identical without ever sending them.
* ``normalization``: ``'sqrt'`` divides the sum by ``√N`` (reference code, HEAD), ``'mean'`` by ``N`` (an
  earlier commit of ``app.py``; the average of ``N`` SPSA estimates, so one replica and ``'mean'`` is
  :func:`gradtx.scale_by_spsa`).
* ``quantize=True`` sends ``ĝ`` through the byte codec of the reference code, ``sign(ĝ) exp(p / 16)`` with
  ``p = clip(round(16 ln|ĝ|), −127, 127)``. The reference computes this ``restored_grad`` but sends the
  unquantized ``ĝ``, so ``quantize=False`` (the default) is what it runs. (The codec's 255 exponents and a
  sign take 9 bits: "one byte" is the paper's rounding.)
* The perturbation scale ε is a fixed hyperparameter; the reference also perturbs and learns log ε.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from gradtx.core import alias, reduce, tree, validation
from gradtx.zeroth_order import perturbation
from gradtx.zeroth_order.perturbation import Distribution
from gradtx.zeroth_order.spsa import ScaleBySpsaState

Normalization = Literal["sqrt", "mean"]


def _replicas(axis_name: reduce.AxisName) -> tuple[int, Any]:
  if axis_name is None:
    return 1, 0
  return int(jax.lax.axis_size(axis_name)), jax.lax.axis_index(axis_name)


def scale_by_just_one_byte(
    eps: Any = 1e-3,
    *,
    seed: int = 0,
    num_samples: int = 1,
    normalization: Normalization = "sqrt",
    quantize: bool = False,
    distribution: Distribution = "normal",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Just One Byte's direction: every replica's own SPSA estimates, exchanged as scalars and re-applied.

  .. math::

    \hat g_{r,s} = \frac{L_r(\theta + \epsilon z_{r,s}) - L_r(\theta - \epsilon z_{r,s})}{2\epsilon}, \quad
    u_t = \frac{1}{c(N)} \sum_{r=1}^{R} \sum_{s=1}^{n} \hat g_{r,s}\, z_{r,s}, \quad N = R n, \
    c(N) = \sqrt N \text{ or } N

  where ``z_{r,s}`` = :func:`gradtx.spsa_direction` ``(params, seed, t, sample=s, replica=r)`` and ``L_r``
  is replica ``r``'s loss on its own micro-batch. Each replica evaluates ``2n`` losses, sends ``n`` floats
  and regenerates ``R n`` perturbations.

  Args:
    eps: ε > 0, the perturbation scale (reference: 1e-3).
    seed: int seed shared by all replicas.
    num_samples: n, perturbations per replica and step.
    normalization: ``'sqrt'`` (reference code: ``/√N``) or ``'mean'`` (``/N``).
    quantize: send ``ĝ`` through the reference's byte codec (:func:`gradtx.zeroth_order.perturbation.one_byte`).
    distribution: ``'normal'`` (reference) or ``'rademacher'``.
    axis_name: the data-parallel axis whose replicas exchange their scalars; ``None``: one replica. Required
      inside named axes: ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with
      ``None``; :data:`gradtx.NO_DATA_AXIS` keeps each replica's estimates to itself on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state :class:`gradtx.ScaleBySpsaState`) whose ``update``
    requires ``params`` and ``loss_fn`` (the replica's loss); the incoming updates are ignored.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> loss_fn = lambda p: jnp.sum(p * jnp.array([1.0, -2.0]))
    >>> params = jnp.zeros(2)
    >>> one = gradtx.scale_by_just_one_byte(seed=0, normalization="mean")
    >>> spsa = gradtx.scale_by_spsa(seed=0)
    >>> a = one.update(params, one.init(params), params, loss_fn=loss_fn)[0]
    >>> b = spsa.update(params, spsa.init(params), params, loss_fn=loss_fn)[0]
    >>> bool(jnp.allclose(a, b))  # one replica: the SPSA estimate
    True

  References:
    Zelikman et al., `Just One Byte (per gradient): A Note on Low-Bandwidth Decentralized Language Model
    Finetuning Using Shared Randomness <https://arxiv.org/abs/2306.10015>`_, 2023.
  """
  validation.check_positive("eps", eps)  # the perturbation scale: the estimate divides by 2ε
  validation.check_int("seed", seed)
  validation.check_int("num_samples", num_samples, low=1)
  validation.check_choice("normalization", normalization, ("sqrt", "mean"))
  validation.check_bool("quantize", quantize)
  validation.check_choice("distribution", distribution, ("normal", "rademacher"))
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    del params
    return ScaleBySpsaState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, loss_fn, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_just_one_byte perturbs the params: call update(updates, state, params, loss_fn=...).")
    reduce.check_data_axis(requested_axis, owner="scale_by_just_one_byte", uses="loss_fn")
    with jax.named_scope("gradtx/just_one_byte"):
      n_replicas, me = _replicas(axis_name)
      z_of = lambda r, s: perturbation.draw(
          perturbation.perturbation_key(state.key, state.count, r, s), params, distribution
      )

      def own(s, g_hats):
        g_hat = perturbation.projected_gradient(loss_fn, params, z_of(me, s), eps)
        return g_hats.at[s].set(g_hat)

      mine = jax.lax.fori_loop(0, num_samples, own, jnp.zeros((num_samples,), jnp.float32))
      if quantize:
        mine = perturbation.one_byte(mine)
      every = mine[None] if axis_name is None else jax.lax.all_gather(mine, axis_name)  # (R, n): the exchange

      def apply(i, acc):
        r, s = i // num_samples, i % num_samples
        return jax.tree.map(lambda a, v: a + every[r, s] * v.astype(jnp.float32), acc, z_of(r, s))

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      total = jax.lax.fori_loop(0, n_replicas * num_samples, apply, zeros)
      n = n_replicas * num_samples
      scale = 1.0 / (n**0.5 if normalization == "sqrt" else n)
      new_updates = jax.tree.map(lambda t, u: (t * scale).astype(u.dtype), total, updates)
      return new_updates, ScaleBySpsaState(count=tree.safe_increment(state.count), key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def just_one_byte(
    learning_rate: optax.ScalarOrSchedule,
    eps: Any = 1e-3,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    seed: int = 0,
    num_samples: int = 1,
    normalization: Normalization = "sqrt",
    quantize: bool = False,
    distribution: Distribution = "normal",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Just One Byte: ``θ ← θ − η (Σ ĝ z / c(N) + λθ)``, replicas exchanging one scalar per perturbation.

  Not in the registry: with ``R`` replicas it draws ``R`` times as many perturbations as one device, so it
  is a different estimator from the single-device step rather than the same step split across devices.

  Args:
    learning_rate: η, a float or an optax schedule (reference: 0.1 with ``√N``).
    eps: see :func:`scale_by_just_one_byte`.
    weight_decay: λ, decoupled and multiplied by η.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    seed: see :func:`scale_by_just_one_byte`.
    num_samples: see :func:`scale_by_just_one_byte`.
    normalization: see :func:`scale_by_just_one_byte`.
    quantize: see :func:`scale_by_just_one_byte`.
    distribution: see :func:`scale_by_just_one_byte`.
    axis_name: see :func:`scale_by_just_one_byte`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params`` and ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss_fn = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.just_one_byte(learning_rate=0.05, num_samples=4, quantize=True)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(p, s, p, loss_fn=loss_fn))  # the gradient argument is unused
    >>> for _ in range(100):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params) < 1e-2)
    True

  References:
    Zelikman et al., `Just One Byte (per gradient): A Note on Low-Bandwidth Decentralized Language Model
    Finetuning Using Shared Randomness <https://arxiv.org/abs/2306.10015>`_, 2023.
  """
  direction = scale_by_just_one_byte(
      eps,
      seed=seed,
      num_samples=num_samples,
      normalization=normalization,
      quantize=quantize,
      distribution=distribution,
      axis_name=axis_name,
  )
  return reduce.with_data_axis_check(
      alias.decoupled(direction, learning_rate, weight_decay, mask), axis_name, owner="just_one_byte", uses="loss_fn"
  )
