"""Float64 NumPy transcriptions of timlautk/AdAdaGrad@cc126fb ``tests.py`` and of the papers' base optimizers.

``tests.py`` loops over parameter tensors: ``norm_test`` sums ``‖Var_i‖₁`` and ``‖ḡ‖²`` over them;
``inner_product_test`` / ``orthogonality_test`` take inner products and projections per tensor (gradtx's
``per_leaf=True``); the paper's whole-tree versions are transcribed on the concatenated vector. The
coordinate-wise test is the per-coordinate norm test. Each returns ``(estimate, variance, ‖ḡ‖²)``.
"""

import math

import jax
import numpy as np


def flat(rows):
  return [np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree.leaves(rows)]


def np_norm(rows, eta):
  leaves = flat(rows)
  var = sum(np.var(x, axis=0, ddof=1).sum() for x in leaves)
  gsq = sum(np.sum(x.mean(0) ** 2) for x in leaves)
  return var / (eta**2 * gsq), var, gsq


def np_inner(rows, theta, per_leaf):
  leaves = flat(rows)
  gsq = sum(np.sum(x.mean(0) ** 2) for x in leaves)
  blocks = leaves if per_leaf else [np.concatenate(leaves, axis=1)]
  var = sum(np.var(x @ x.mean(0), ddof=1) for x in blocks)
  return var / (theta**2 * gsq**2), var, gsq


def np_orth(rows, nu, per_leaf):
  leaves = flat(rows)
  gsq = sum(np.sum(x.mean(0) ** 2) for x in leaves)
  blocks = leaves if per_leaf else [np.concatenate(leaves, axis=1)]
  var = 0.0
  for x in blocks:
    m = x.mean(0)
    ortho = x - np.outer(x @ m, m) / np.sum(m**2)
    var += np.var(ortho, axis=0, ddof=1).sum()
  return var / (nu**2 * gsq), var, gsq


def np_coordinate(rows, eta):
  x = np.concatenate(flat(rows), axis=1)
  var = np.var(x, axis=0, ddof=1)
  return np.max(var / (eta**2 * x.mean(0) ** 2)), var.sum(), np.sum(x.mean(0) ** 2)


def np_estimate(test, rows, eta, theta, nu, per_leaf=False):
  if test == "norm":
    return np_norm(rows, eta)[0]
  if test == "coordinate":
    return np_coordinate(rows, eta)[0]
  ip = np_inner(rows, theta, per_leaf)[0]
  return ip if test == "inner_product" else max(ip, np_orth(rows, nu, per_leaf)[0])


def np_next_batch_size(b, estimate, max_batch_size):
  """main.py: ``max(b, ⌈estimate⌉)`` capped at the maximum (gradtx never lowers it)."""
  return min(max(b, math.ceil(estimate)), max_batch_size)


def np_adagrad(g, v, eps=1e-10):
  """torch.optim.Adagrad (lr applied by the caller): ``v += g²``, ``u = g / (√v + ε)``."""
  v = v + g * g
  return g / (np.sqrt(v) + eps), v


def np_adagrad_norm(grads, b_sq, eps=1e-10):
  """AdaGrad-Norm over a list of arrays: ``b² += ‖g‖²``, ``u = g / (b + ε)``."""
  b_sq = b_sq + sum(np.sum(g * g) for g in grads)
  return [g / (np.sqrt(b_sq) + eps) for g in grads], b_sq
