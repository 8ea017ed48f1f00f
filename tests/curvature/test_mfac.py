"""M-FAC: equals the direct solve, and follows a NumPy transcription of the official HInvFastUpMulti / MFAC.step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
_SHAPES = {"b": (3,), "w": (2, 4)}


def _grads(n):
  return [{k: _RNG.normal(size=s) for k, s in _SHAPES.items()} for _ in range(n)]


def _flat(tree):
  return np.concatenate([np.ravel(tree[k]) for k in sorted(tree)])


def _direct(window, g, damping):
  """(δ I + GᵀG / m)⁻¹ g with G the m × d window."""
  m, d = window.shape
  return np.linalg.solve(damping * np.eye(d) + window.T @ window / m, g)


@pytest.mark.parametrize("dtype,damping,rtol", [("float64", 1e-5, 1e-5), ("float32", 1e-1, 1e-5)])
def test_equals_direct_solve(dtype, damping, rtol):
  """Relative error in norm (float32 cancels digits of small entries, as the official float32 code does)."""
  m, grads = 4, _grads(7)  # 7 > m: the ring buffer wraps around
  with jax.enable_x64(dtype == "float64"):
    tx = gradtx.scale_by_mfac(num_grads=m, damping=damping)
    state = tx.init(jax.tree.map(lambda x: jnp.asarray(x, dtype), grads[0]))
    window = np.zeros((m, 11))
    for t, g in enumerate(grads):
      u, state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, dtype), g), state)
      window[t % m] = _flat(g)
      want = _direct(window, _flat(g), damping)
      assert np.linalg.norm(_flat(u) - want) <= rtol * np.linalg.norm(want)


def test_leaf_blocks_equal_per_leaf_direct_solves():
  m, damping, grads = 3, 1e-1, _grads(5)
  tx = gradtx.scale_by_mfac(num_grads=m, damping=damping, blocks="leaf")
  state = tx.init(jax.tree.map(jnp.asarray, grads[0]))
  windows = {k: np.zeros((m, int(np.prod(s)))) for k, s in _SHAPES.items()}
  for t, g in enumerate(grads):
    u, state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state)
    for k in _SHAPES:
      windows[k][t % m] = np.ravel(g[k])
      want = _direct(windows[k], np.ravel(g[k]), damping)
      assert np.linalg.norm(np.ravel(u[k]) - want) <= 1e-5 * np.linalg.norm(want)


class _OfficialHInv:
  """NumPy transcription of M-FAC's HInvFastUpMulti (single device): non-pivoted LU of λ·GGᵀ + m·I, the
  coefficient matrix B by its row recurrence, and the IHVP recurrences."""

  def __init__(self, m, d, damp):
    self.m, self.lambd, self.last = m, 1.0 / damp, 0
    self.grads, self.dots = np.zeros((m, d)), np.zeros((m, m))

  def _setup(self):
    m = self.m
    a = self.lambd * self.dots + m * np.eye(m)
    u = a.copy()  # Doolittle elimination without pivoting; torch.lu(pivot=False)[0] packs U's upper triangle.
    for j in range(m):
      for i in range(j + 1, m):
        u[i, j:] -= (u[i, j] / u[j, j]) * u[j, j:]
    self.gi_hig = np.triu(u - m * np.eye(m))
    self.denom = m + np.diag(self.gi_hig)
    tmp = -self.gi_hig.T / self.denom.reshape(1, -1)
    self.coef = self.lambd * np.eye(m)
    for i in range(1, m):
      self.coef[i, :i] = tmp[i, :i] @ self.coef[:i, :i]

  def update_mul(self, g):
    self.grads[self.last] = g
    tmp = self.grads @ g
    self.dots[self.last, :] = tmp
    self.dots[:, self.last] = tmp
    self._setup()
    gi_hix = self.lambd * tmp
    for i in range(1, self.m):
      gi_hix[i:] -= self.gi_hig[i - 1, i:] * (gi_hix[i - 1] / self.denom[i - 1])
    res = self.lambd * g - (gi_hix / self.denom) @ self.coef @ self.grads
    self.last = (self.last + 1) % self.m
    return res


def test_mfac_matches_official_optimizer_step():
  """MFAC.step: g + wd·w into the window, IHVP, v ← μv + (1−μ)u, w ← w − lr·v (over several wrap-arounds)."""
  lr, m, damp, mu, wd = 0.1, 3, 1e-1, 0.5, 0.05
  target = {k: _RNG.normal(size=s) for k, s in _SHAPES.items()}
  w0 = {k: np.zeros(s) for k, s in _SHAPES.items()}
  grad = lambda w: {k: 2 * (w[k] - target[k]) + 0.3 * np.sin(3 * w[k]) for k in w}
  hinv, w, v, want = _OfficialHInv(m, 11, damp), _flat(w0), np.zeros(11), []
  unflat = lambda f: {"b": f[:3], "w": f[3:].reshape(2, 4)}
  for _ in range(8):
    u = hinv.update_mul(_flat(grad(unflat(w))) + wd * w)
    v = mu * v + (1 - mu) * u
    w = w - lr * v
    want.append(w.copy())
  with jax.enable_x64(True):
    tx = gradtx.mfac(lr, num_grads=m, damping=damp, momentum=mu, weight_decay=wd)
    params = jax.tree.map(jnp.asarray, w0)
    state = tx.init(params)
    for expected in want:
      g = jax.tree.map(jnp.asarray, grad(jax.tree.map(np.asarray, params)))
      u, state = tx.update(g, state, params)
      params = optax.apply_updates(params, u)
      np.testing.assert_allclose(_flat(jax.tree.map(np.asarray, params)), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"num_grads": 0}, "num_grads"), ({"num_grads": 2.0}, "num_grads"), ({"damping": 0.0}, "damping"), ({"blocks": "layer"}, "blocks")],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.scale_by_mfac(**kwargs)


def test_invalid_momentum():
  with pytest.raises(ValueError, match="momentum"):
    gradtx.mfac(0.1, momentum=1.0)
