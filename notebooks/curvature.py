# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Curvature: Sophia and AdaHessian with a Flax nnx model
#
# Second-order optimizers precondition the gradient with an estimate of the Hessian's diagonal:
#
# - **Sophia** ([Liu et al. 2024](https://arxiv.org/abs/2305.14342)) steps `clip(m / max(γ·h, ε), 1)`: the
#   momentum `m` divided by an EMA `h` of the Hessian diagonal, clipped coordinate-wise to ±1, so the
#   learning rate is the largest step any coordinate takes. `h` is refreshed every `k` = 10 steps, by
#   Hutchinson's estimator `u ⊙ (H u)` with a Gaussian probe `u` (**Sophia-H**) or by the
#   Gauss-Newton-Bartlett estimator with labels sampled from the model (**Sophia-G**).
# - **AdaHessian** ([Yao et al. 2021](https://arxiv.org/abs/2006.00719)) is Adam with the square of
#   Hutchinson's estimate in place of the squared gradient.
#
# Both need more than the gradient. gradtx takes it as keyword arguments of `update`: `loss_fn` (the
# parameters → the loss on the current batch, for Hessian-vector products) and `logits_fn` (the
# parameters → the logits, for Sophia-G). With Flax nnx, `nnx.Optimizer.update(model, grads, **kwargs)`
# passes them on.

# %%
# On Colab, install gradtx from its git repository (it is not on PyPI yet); elsewhere use the local copy.
import subprocess
import sys

GRADTX_GIT_URL = "https://github.com/OWNER/gradtx"  # placeholder until the repository is public (README)
if "google.colab" in sys.modules:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"gradtx[notebooks] @ git+{GRADTX_GIT_URL}"],
                 check=True)

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import gradtx

# Small sizes keep the notebook to seconds on 2 CPU cores (it runs in the test suite);
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) to train longer and add the other curvature optimizers.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 200 if SMALL else 1000

# %% [markdown]
# ## Hutchinson's estimate of the Hessian diagonal
#
# `gradtx.estimate_hessian_diag_hutchinson` is a transformation of its own: given `loss_fn`, it returns
# `u ⊙ (H u)` for a fresh random probe `u`, computed by forward-over-reverse differentiation (no Hessian
# is formed). One probe is noisy; the mean over many probes converges to the exact diagonal, here checked
# against `jax.hessian` on a small logistic regression.

# %%
rng = np.random.default_rng(0)
features = jnp.asarray(rng.normal(size=(200, 6)), jnp.float32)
targets = jnp.asarray(rng.random(200) < 0.5, jnp.float32)
logistic = lambda w: optax.sigmoid_binary_cross_entropy(features @ w, targets).mean() + 0.05 * jnp.sum(w**2)
w0 = jnp.asarray(rng.normal(size=6), jnp.float32)
exact = jnp.diag(jax.hessian(logistic)(w0))


estimator = gradtx.estimate_hessian_diag_hutchinson(seed=0)


@jax.jit
def estimates(state):
  def one(state, _):  # each call draws a new probe (the key is folded with the estimate count)
    diag, state = estimator.update(w0, state, w0, loss_fn=logistic)
    return state, diag

  return jax.lax.scan(one, state, length=1000)[1]


probes = np.asarray(estimates(estimator.init(w0)))
running_mean = np.cumsum(probes, axis=0) / np.arange(1, 1001)[:, None]
error = np.abs(running_mean - np.asarray(exact)).max(axis=1) / float(jnp.abs(exact).max())
print("exact diagonal   :", np.round(np.asarray(exact), 4))
print("mean of 1000     :", np.round(running_mean[-1], 4))
assert error[-1] < 0.1 and error[-1] < error[0] / 3

plt.figure(figsize=(5, 3))
plt.loglog(np.arange(1, 1001), error)
plt.loglog([1, 1000], [error[0], error[0] / np.sqrt(1000)], "k:", label="1/√n")
plt.xlabel("probes averaged")
plt.ylabel("max relative error")
plt.title("Hutchinson's estimator")
plt.legend()
plt.show()

# %% [markdown]
# ## Training an nnx MLP on digits
#
# The training step builds `loss_fn` and `logits_fn` from the model for the current batch (split the
# model into its parameters and the rest, and merge them back inside the function; `copy=True` keeps a
# model whose forward pass changes its state, such as BatchNorm, usable) and gives both to
# `optimizer.update`. Each optimizer takes what it needs and ignores the rest, so the same step trains
# AdamW, Sophia-H, Sophia-G and AdaHessian. The step also returns Sophia's `clip_fraction`, the share of
# coordinates clipped at that step, kept in its state.

# %%
images, labels = load_digits(return_X_y=True)
order = rng.permutation(len(images))
x_all = jnp.asarray(images[order] / 16.0, jnp.float32)
y_all = jnp.asarray(labels[order], jnp.int32)
x_train, y_train, x_val, y_val = x_all[:1400], y_all[:1400], x_all[1400:], y_all[1400:]
batches = rng.integers(0, 1400, size=(STEPS, 64))


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.tanh(self.hidden(x)))


def loss(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def clip_fraction(opt_state):
  """Sophia's clip fraction, or NaN for optimizers that do not clip."""
  found = optax.tree_utils.tree_get_all_with_path(opt_state, "clip_fraction")
  return jnp.asarray(found[0][1]) if found else jnp.float32(jnp.nan)


@nnx.jit
def train_step(model, optimizer, x, y):
  value, grads = nnx.value_and_grad(loss)(model, x, y)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  as_model = lambda params: nnx.merge(graphdef, params, rest, copy=True)
  optimizer.update(model, grads,
                   loss_fn=lambda params: loss(as_model(params), x, y),  # Hessian-vector products
                   logits_fn=lambda params: as_model(params)(x))  # Sophia-G's sampled labels
  return value, clip_fraction(optimizer.opt_state)


@nnx.jit
def accuracy(model):
  return jnp.mean(model(x_val).argmax(-1) == y_val)


def fit(tx):
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  losses, fractions = [], []
  for idx in batches:
    value, fraction = train_step(model, optimizer, x_train[idx], y_train[idx])
    losses.append(float(value))
    fractions.append(float(fraction))
  return {"loss": np.array(losses), "clip_fraction": np.array(fractions), "accuracy": float(accuracy(model)),
          "state_bytes": gradtx.state_nbytes(nnx.state(optimizer, nnx.OptState))}


# %% [markdown]
# Learning rates: Sophia's is the largest step any coordinate takes (sign-momentum territory, as for
# Lion); AdaHessian's official default is 0.15; AdamW's suits this MLP. All decay with a cosine schedule.
# Sophia runs at the official defaults (γ = 0.01 for Sophia-H, ρ = 0.05 for Sophia-G), plus one Sophia-H
# with γ = 1 to show what γ does.

# %%
cosine = lambda peak: optax.cosine_decay_schedule(peak, STEPS, alpha=0.1)
optimizers = {
    "AdamW (optax)": optax.adamw(cosine(1e-2), weight_decay=1e-4),
    "Sophia-H": gradtx.sophia_h(cosine(3e-3), weight_decay=1e-4),
    "Sophia-H, γ = 1": gradtx.sophia_h(cosine(3e-3), gamma=1.0, weight_decay=1e-4),
    "Sophia-G": gradtx.sophia_g(cosine(3e-3), weight_decay=1e-4),
    "AdaHessian": gradtx.adahessian(cosine(0.15), weight_decay=1e-4),
}
if not SMALL:  # every other registered curvature optimizer this step can feed
  for name, spec in gradtx.OPTIMIZERS.items():
    if spec.family == "curvature" and name not in ("sophia_h", "sophia_g", "adahessian") and \
        set(spec.required_extra_args) <= {"loss_fn", "logits_fn"}:
      optimizers[name] = spec.build()
results = {name: fit(tx) for name, tx in optimizers.items()}

print(f"{'':>16}  val accuracy  final loss  state bytes")
for name, r in results.items():
  print(f"{name:>16}  {r['accuracy']:12.3f}  {r['loss'][-20:].mean():10.4f}  {r['state_bytes']:11,}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for name, r in results.items():
  style = {"color": "k", "ls": "--"} if name.startswith("AdamW") else {}
  axes[0].plot(np.arange(10, STEPS + 1), np.convolve(r["loss"], np.ones(10) / 10, "valid"), label=name, **style)
  if not np.isnan(r["clip_fraction"]).all():
    axes[1].plot(r["clip_fraction"], label=name, lw=1)
axes[0].set(xlabel="step", ylabel="train loss (moving average)", yscale="log", title="loss")
axes[0].legend()
axes[1].set(xlabel="step", ylabel="clipped coordinates", ylim=(0, 1), title="Sophia: fraction clipped at ±1")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Sophia's clip fraction tells how it behaves. Its EMA of the Hessian diagonal has no bias correction:
# it starts at zero and gains 1% of an estimate at each refresh (β2 = 0.99, every 10 steps), so during the
# first few hundred steps `γ·h` is far below `|m|` and nearly every coordinate is clipped: Sophia takes
# sign-momentum steps of the full learning rate (the unclipped remainder here are mostly weights of
# always-blank pixels, whose gradient is zero). As `h` builds up, coordinates with large curvature drop
# below the clip and take Newton-like steps `m / (γ·h)`; the fraction falls, in steps at each refresh. On
# this short run that has only begun at the default γ, so Sophia-H and Sophia-G behave almost alike. With
# γ = 1 (a 100× larger denominator) the fraction rises while the early gradients are large, then falls to
# about half: curvature sets the step of half the coordinates. (`rho` is `sophia_g`'s γ.)

# %%
for name, r in results.items():
  assert r["accuracy"] > 0.9, name
for name in ("Sophia-H", "Sophia-G", "Sophia-H, γ = 1"):
  fraction = results[name]["clip_fraction"]
  assert np.all((0 < fraction) & (fraction < 1)), name
  assert fraction[-20:].mean() < fraction.max() - 0.01, name  # clipping falls as h builds up
assert results["Sophia-H, γ = 1"]["clip_fraction"][-20:].mean() < results["Sophia-H"]["clip_fraction"][-20:].mean() - 0.2
assert np.isnan(results["AdaHessian"]["clip_fraction"]).all()  # AdaHessian does not clip
