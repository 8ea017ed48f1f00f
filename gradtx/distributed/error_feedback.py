"""Compressed data-parallel means with error feedback: plain compression, EF14, EF21, EControl.

Each worker (a device on ``axis_name`` inside ``pmap`` / ``shard_map``) compresses a message built from its
own gradient and the workers average the compressed messages (``lax.pmean`` across ``axis_name``, which is
where the bandwidth is saved); the result, identical on every worker, is the update direction. Put the
block first, on the *local* (not yet averaged) gradients, and the optimizer after it:
``optax.chain(gradtx.compress_with_error_feedback(gradtx.top_k(0.01), axis_name='data'), optax.sgd(lr))``.
With ``axis_name=None`` there is one worker and the mean is the message itself.

Methods (worker ``i``, gradient ``g_i``, compressor ``C``, workers' mean ``⟨·⟩``):

* :func:`compress`, no feedback: ``u = ⟨C(g_i)⟩``. With a biased compressor (top-k) and heterogeneous
  workers the fixed points are not the stationary points: it stalls.
* EF14 (Seide et al. 2014; Karimireddy et al. 2019 "EF-SGD"): ``p_i = g_i + e_i``, ``Δ_i = C(p_i)``,
  ``e_i ← p_i − Δ_i``, ``u = ⟨Δ_i⟩``. The papers feed back ``γ g + e`` (learning rate inside); here the
  error is kept in gradient units, before the learning rate (as PowerSGD's and 1-bit SGD's hooks do): the
  same iterates for a constant learning rate, and the residual is not rescaled when a schedule moves.
* EF21 (Richtárik, Sokolov, Fatkhullin 2021, arXiv:2106.05203): ``c_i = C(g_i − h_i)``,
  ``h_i ← h_i + c_i``, ``h ← h + ⟨c_i⟩``, ``u = h`` (``h_i``, ``h`` start at 0, so ``h = ⟨h_i⟩`` always).
* EControl (Gao, Islamov, Stich, ICLR 2024, arXiv:2311.05645): ``Δ_i = C(η e_i + g_i − h_i)``,
  ``e_i ← e_i + g_i − h_i − Δ_i``, ``h_i ← h_i + Δ_i``, ``h ← h + ⟨Δ_i⟩``, ``u = h``. ``η`` controls the
  strength of the feedback: ``η = 0`` is EF21 (with ``h_i⁰ = 0``); the theory takes ``η = δ/400``, the
  paper's experiments tune it. Checked against the algorithm as summarized in the OpenReview discussion
  (η = 0 and ``h_i⁰ = C(g_i⁰)`` recover EF21) and a third-party PyTorch port (the ``EControl``
  communicator of a federated-unlearning code base: the same three lines); the official code was not found.

State: ``error`` and ``local_estimate`` differ from worker to worker (under ``pmap`` each device keeps its
own; under ``shard_map`` give them a leading worker axis, see the README); ``estimate`` and ``count`` agree
across workers. State is kept in at least float32 (a bf16 residual would lose what feedback is for);
updates have the gradient's dtype.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, tree, validation
from gradtx.distributed.compressors import Compressor

FeedbackVariant = Literal["ef14", "ef21"]


class CompressState(NamedTuple):
  """State of :func:`compress`: the step count (seeds randomized compressors)."""

  count: jax.Array


class ErrorFeedbackState(NamedTuple):
  """State of :func:`compress_with_error_feedback` with ``variant='ef14'``: the worker's residual."""

  count: jax.Array
  error: optax.Updates


class EF21State(NamedTuple):
  """State of :func:`compress_with_error_feedback` with ``variant='ef21'``."""

  count: jax.Array
  local_estimate: optax.Updates  # h_i, this worker's
  estimate: optax.Updates  # h = ⟨h_i⟩, the same on every worker


class EControlState(NamedTuple):
  """State of :func:`compress_with_econtrol`."""

  count: jax.Array
  error: optax.Updates  # e_i
  local_estimate: optax.Updates  # h_i
  estimate: optax.Updates  # h


def _wide_zeros(params):
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.promote_types(p.dtype, jnp.float32)), params)


def _wide(updates):
  return jax.tree.map(lambda g: g.astype(jnp.promote_types(g.dtype, jnp.float32)), updates)


def _check(compressor):
  if not isinstance(compressor, Compressor):
    raise ValueError(
        f"`compressor` must be a gradtx Compressor (gradtx.top_k, random_k, scaled_sign), got {compressor!r}."
    )


def compress(compressor: Compressor, *, axis_name: reduce.AxisName = None) -> optax.GradientTransformationExtraArgs:
  r"""The workers' mean of their compressed gradients, without feedback: ``u = ⟨C(g_i)⟩``.

  The baseline the feedback methods fix: with top-k and workers whose gradients disagree it stalls.

  Args:
    compressor: a :class:`gradtx.Compressor`.
    axis_name: the data-parallel axis whose workers' messages are averaged; ``None``: one worker.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.compress(gradtx.top_k(0.5))
    >>> tx.update(jnp.array([1.0, -4.0, 2.0, 0.5]), tx.init(jnp.zeros(4)))[0]
    Array([ 0., -4.,  2.,  0.], dtype=float32)
  """
  _check(compressor)

  def init_fn(params):
    del params
    return CompressState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/compress"):
      sent = compressor.compress(_wide(updates), state.count)
      mean = reduce.pmean(sent, axis_name)
      return tree.cast_like(mean, updates), CompressState(count=tree.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def compress_with_error_feedback(
    compressor: Compressor, *, variant: FeedbackVariant = "ef21", axis_name: reduce.AxisName = None
) -> optax.GradientTransformationExtraArgs:
  r"""The workers' mean of compressed messages with error feedback, EF14 or EF21.

  .. math::

    \text{EF14:}\quad & p_i = g_i + e_i, \quad \Delta_i = C(p_i), \quad e_i \leftarrow p_i - \Delta_i,
    \quad u = \langle \Delta_i \rangle \\
    \text{EF21:}\quad & c_i = C(g_i - h_i), \quad h_i \leftarrow h_i + c_i, \quad
    h \leftarrow h + \langle c_i \rangle, \quad u = h

  Args:
    compressor: a :class:`gradtx.Compressor`.
    variant: ``'ef14'`` (error feedback, Seide et al. 2014 / Karimireddy et al. 2019) or ``'ef21'``
      (Richtárik et al. 2021).
    axis_name: the data-parallel axis whose workers' messages are averaged; ``None``: one worker.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state :class:`gradtx.ErrorFeedbackState` for EF14,
    :class:`gradtx.EF21State` for EF21). Give it the worker's *local* gradient.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.compress_with_error_feedback(gradtx.top_k(0.5), variant="ef14")
    >>> state = tx.init(jnp.zeros(4))
    >>> u, state = tx.update(jnp.array([1.0, -4.0, 2.0, 0.5]), state)
    >>> u, state.error  # what was not sent waits for the next step
    (Array([ 0., -4.,  2.,  0.], dtype=float32), Array([1. , 0. , 0. , 0.5], dtype=float32))

  References:
    Seide et al., `1-Bit Stochastic Gradient Descent and its Application to Data-Parallel Distributed
    Training of Speech DNNs <https://www.isca-archive.org/interspeech_2014/seide14_interspeech.html>`_, 2014.
    Karimireddy et al., `Error Feedback Fixes SignSGD and other Gradient Compression Schemes
    <https://arxiv.org/abs/1901.09847>`_, 2019.
    Richtárik, Sokolov, Fatkhullin, `EF21: A New, Simpler, Theoretically Better, and Practically Faster
    Error Feedback <https://arxiv.org/abs/2106.05203>`_, 2021.
  """
  _check(compressor)
  validation.check_choice("variant", variant, ("ef14", "ef21"))

  def init_fn(params):
    count = jnp.zeros([], jnp.int32)
    if variant == "ef14":
      return ErrorFeedbackState(count=count, error=_wide_zeros(params))
    return EF21State(count=count, local_estimate=_wide_zeros(params), estimate=_wide_zeros(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope(f"gradtx/compress_with_error_feedback_{variant}"):
      g = _wide(updates)
      count = tree.safe_increment(state.count)
      if variant == "ef14":
        p = jax.tree.map(jnp.add, g, state.error)
        sent = compressor.compress(p, state.count)
        error = jax.tree.map(jnp.subtract, p, sent)
        return tree.cast_like(reduce.pmean(sent, axis_name), updates), ErrorFeedbackState(count, error)
      sent = compressor.compress(jax.tree.map(jnp.subtract, g, state.local_estimate), state.count)
      local = jax.tree.map(jnp.add, state.local_estimate, sent)
      estimate = jax.tree.map(jnp.add, state.estimate, reduce.pmean(sent, axis_name))
      return tree.cast_like(estimate, updates), EF21State(count, local, estimate)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def compress_with_econtrol(
    compressor: Compressor, eta: Any = 0.1, *, axis_name: reduce.AxisName = None
) -> optax.GradientTransformationExtraArgs:
  r"""EControl: error feedback whose strength ``η`` is controlled (Gao, Islamov, Stich 2024).

  .. math::

    \Delta_i = C(\eta\, e_i + g_i - h_i), \quad e_i \leftarrow e_i + g_i - h_i - \Delta_i, \quad
    h_i \leftarrow h_i + \Delta_i, \quad h \leftarrow h + \langle \Delta_i \rangle, \quad u = h

  Args:
    compressor: a :class:`gradtx.Compressor`.
    eta: η >= 0, the feedback strength (0: EF21; theory δ/400; tuned in the paper's experiments).
    axis_name: the data-parallel axis whose workers' messages are averaged; ``None``: one worker.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state :class:`gradtx.EControlState`). Give it the
    worker's *local* gradient.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.compress_with_econtrol(gradtx.top_k(0.5), eta=0.5)
    >>> state = tx.init(jnp.zeros(4))
    >>> u, state = tx.update(jnp.array([1.0, -4.0, 2.0, 0.5]), state)
    >>> u, state.error
    (Array([ 0., -4.,  2.,  0.], dtype=float32), Array([1. , 0. , 0. , 0.5], dtype=float32))

  References:
    Gao, Islamov, Stich, `EControl: Fast Distributed Optimization with Compression and Error Control
    <https://arxiv.org/abs/2311.05645>`_, ICLR 2024.
  """
  _check(compressor)
  validation.check_nonnegative("eta", eta)

  def init_fn(params):
    zeros = lambda: _wide_zeros(params)
    return EControlState(count=jnp.zeros([], jnp.int32), error=zeros(), local_estimate=zeros(), estimate=zeros())

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/compress_with_econtrol"):
      innovation = jax.tree.map(jnp.subtract, _wide(updates), state.local_estimate)  # g_i − h_i
      message = jax.tree.map(lambda e, v: (eta * e).astype(e.dtype) + v, state.error, innovation)
      sent = compressor.compress(message, state.count)
      error = jax.tree.map(lambda e, v, s: e + v - s, state.error, innovation, sent)
      local = jax.tree.map(jnp.add, state.local_estimate, sent)
      estimate = jax.tree.map(jnp.add, state.estimate, reduce.pmean(sent, axis_name))
      new_state = EControlState(tree.safe_increment(state.count), error, local, estimate)
      return tree.cast_like(estimate, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
