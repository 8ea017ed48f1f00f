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
# # gradtx quickstart
#
# gradtx is a library of optax gradient transformations from recent optimizer papers. This notebook shows
# how its pieces fit together:
#
# 1. a full optimizer is an `optax.chain` of small pieces, and gradtx's pieces mix with optax's;
# 2. `optax.masked` and `optax.partition` give different parameters different treatment;
# 3. training a Flax nnx MLP on scikit-learn's digits with `nnx.Optimizer`;
# 4. swapping optimizers by name from the registry, `gradtx.OPTIMIZERS`.
#
# It runs on a CPU in well under a minute.

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
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) to train longer and compare every registered optimizer.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 150 if SMALL else 1000

# %% [markdown]
# ## 1. A full optimizer is a chain
#
# Every gradtx method comes in two forms: `scale_by_<method>` gives only the update *direction*, and
# `<method>(learning_rate, ...)` is the full optimizer, a short chain of the direction, decoupled weight
# decay and the learning rate. Writing the chain yourself gives the same numbers:

# %%
params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "norm": {"scale": jnp.ones(2)}}
grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), params)

by_hand = optax.chain(
    gradtx.scale_by_lion(b1=0.9, b2=0.99),
    optax.add_decayed_weights(0.1, mask=gradtx.exclude_bias_and_norm),  # no decay on biases and norm scales
    optax.scale_by_learning_rate(1e-3),
)
packaged = gradtx.lion(1e-3, b1=0.9, b2=0.99, weight_decay=0.1, mask=gradtx.exclude_bias_and_norm)


def three_steps(tx):
  state, p = tx.init(params), params
  for _ in range(3):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  return p


jax.tree.map(np.testing.assert_allclose, three_steps(by_hand), three_steps(packaged))
print(jax.tree.map(lambda p: p.tolist(), three_steps(packaged)))

# %% [markdown]
# The pieces mix freely with optax's. Clipping goes in front (`optax.clip_by_global_norm`, or gradtx's
# coordinate-wise `clip_by_coordinate` from Pan & Li 2023), schedules go where a learning rate goes, and
# `optax.inject_hyperparams` makes the learning rate a value you can change between steps without
# recompiling:

# %%
schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup_steps=20, decay_steps=STEPS)
tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    gradtx.clip_by_coordinate(fraction=0.1, threshold_scale=2.0),
    gradtx.adabelief(schedule, weight_decay=1e-4),
)
updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
injected = optax.inject_hyperparams(gradtx.adabelief)(learning_rate=3e-3, weight_decay=1e-4)
step = jax.jit(injected.update)
state = injected.init(params)
first, state = step(grads, state, params)
state.hyperparams["learning_rate"] = jnp.asarray(1e-3)  # e.g. lowered by hand after a plateau
second, state = step(grads, state, params)  # same compiled function, a third of the step
print("update norms at lr 3e-3 and 1e-3:", float(optax.global_norm(first)), float(optax.global_norm(second)))
assert 0.25 < optax.global_norm(second) / optax.global_norm(first) < 0.4

# %% [markdown]
# ## 2. Different parameters, different treatment
#
# `optax.masked(inner, mask)` applies `inner` only where the mask is True and passes the other updates
# through unchanged. Here coordinate clipping acts on the kernels only:

# %%
kernels_only = optax.masked(gradtx.clip_by_coordinate(fraction=0.5), gradtx.exclude_bias_and_norm)
spiky = jax.tree.map(lambda g: g.at[..., 0].mul(100.0), grads)  # one large coordinate column per leaf
clipped, _ = kernels_only.update(spiky, kernels_only.init(params), params)
np.testing.assert_array_equal(clipped["dense"]["bias"], spiky["dense"]["bias"])  # untouched
assert jnp.abs(clipped["dense"]["kernel"]).max() < jnp.abs(spiky["dense"]["kernel"]).max()
print("kernel after masked clipping:\n", clipped["dense"]["kernel"])

# %% [markdown]
# `optax.partition(transforms, labels)` gives each group of parameters its own optimizer, with its own
# state. A common choice for layer-wise methods: LAMB's trust ratio for the weight matrices, plain Adam for
# biases and normalization scales.

# %%
def matrix_or_vector(params):
  return jax.tree.map(lambda p: "matrix" if p.ndim > 1 else "vector", params)


partitioned = optax.partition(
    {"matrix": gradtx.lamb(1e-2, weight_decay=1e-2), "vector": optax.adam(3e-3)},
    matrix_or_vector,
)
print(matrix_or_vector(params))

# %% [markdown]
# ## 3. Training a Flax nnx model on digits
#
# scikit-learn's digits: 1,797 grey-scale 8×8 images of handwritten digits (no download needed). A small
# MLP with a LayerNorm, trained with mini-batches of 64.

# %%
images, labels = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(images))
n_train = 1400
x_all = jnp.asarray(images[order] / 16.0, jnp.float32)
y_all = jnp.asarray(labels[order], jnp.int32)
x_train, y_train, x_val, y_val = x_all[:n_train], y_all[:n_train], x_all[n_train:], y_all[n_train:]
batches = rng.integers(0, n_train, size=(STEPS, 64))

fig, axes = plt.subplots(1, 8, figsize=(10, 1.5))
for ax, image, label in zip(axes, images[:8], labels[:8]):
  ax.imshow(image.reshape(8, 8), cmap="gray_r")
  ax.set(title=str(label), xticks=[], yticks=[])
plt.show()


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.norm = nnx.LayerNorm(128, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.norm(self.hidden(x))))


def loss(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


# %% [markdown]
# `nnx.Optimizer(model, tx, wrt=nnx.Param)` holds the optimizer state next to the model.
# `optimizer.update(model, grads, **extra)` forwards keyword arguments to `tx.update`: optimizers that need
# more than the gradient get it here (Sophia-H and AdaHessian need `loss_fn`, the parameters → the batch
# loss; Sophia-G needs `logits_fn`), and all others ignore it, so one training step serves every optimizer.

# %%
@nnx.jit
def train_step(model, optimizer, x, y):
  value, grads = nnx.value_and_grad(loss)(model, x, y)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  as_model = lambda params: nnx.merge(graphdef, params, rest, copy=True)
  optimizer.update(model, grads, value=value, loss_fn=lambda params: loss(as_model(params), x, y),
                   logits_fn=lambda params: as_model(params)(x))
  return value


@nnx.jit
def accuracy(model, x, y):
  return jnp.mean(model(x).argmax(-1) == y)


def fit(tx, steps=STEPS, eval_every=25):
  """Trains a fresh MLP (same initialization and batches for every optimizer); returns the curves."""
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  history = {"loss": [], "step": [], "val_accuracy": []}
  for step in range(steps):
    idx = batches[step]
    history["loss"].append(float(train_step(model, optimizer, x_train[idx], y_train[idx])))
    if (step + 1) % eval_every == 0:
      history["step"].append(step + 1)
      history["val_accuracy"].append(float(accuracy(model, x_val, y_val)))
  history["state_bytes"] = gradtx.state_nbytes(nnx.state(optimizer, nnx.OptState))
  return history


history = fit(partitioned)
print(f"LAMB + Adam partition: val accuracy {history['val_accuracy'][-1]:.3f}, "
      f"optimizer state {history['state_bytes']:,} bytes")
assert history["val_accuracy"][-1] > 0.9

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(history["loss"], lw=0.8)
axes[0].set(xlabel="step", ylabel="train loss (batch)", yscale="log", title="LAMB (matrices) + Adam (vectors)")
axes[1].plot(history["step"], history["val_accuracy"], "o-")
axes[1].set(xlabel="step", ylabel="validation accuracy", ylim=(0, 1))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Swapping optimizers from the registry
#
# `gradtx.OPTIMIZERS` maps each name to a spec: the factory, its family, the paper, the reference code it was
# checked against, and the extra `update` arguments it needs. `spec.factory(learning_rate=...)` builds the
# optimizer; `spec.build(...)` does the same on top of the small arguments the test suite uses.

# %%
for name, spec in gradtx.OPTIMIZERS.items():
  extra = ", ".join(spec.required_extra_args) or "-"
  print(f"{name:>24}  {spec.family:<15} extra args: {extra:<18} {spec.paper[:60]}")

# %% [markdown]
# Learning rates differ between methods (sign methods take smaller steps; trust-ratio methods take
# relative ones), so each gets one that suits this MLP (from a sweep on it); the rest take Adam's. The
# small run trains four of them; the full run trains every one whose extra arguments this training step
# provides (`value`, `loss_fn`, `logits_fn`).

# %%
DIGITS_LEARNING_RATES = {"lion": 1e-3, "lion_8bit": 1e-3, "signum": 1e-3, "lamb": 1e-2, "lars": 3e-2, "sgdp": 0.1,
                         "adagrad_norm": 1.0, "adahessian": 0.15, "mfac": 1e-3, "regularized_newton": 1.0}
PROVIDED = {"value", "loss_fn", "logits_fn"}
SMALL_SELECTION = ("lion", "adabelief", "adamp", "spam")

chosen = {}
for name, spec in gradtx.OPTIMIZERS.items():
  if not set(spec.required_extra_args) <= PROVIDED:
    print(f"skipping {name}: needs {spec.required_extra_args}")
    continue
  if SMALL and name not in SMALL_SELECTION:
    continue
  chosen[name] = spec

results = {"optax.adamw": fit(optax.adamw(3e-3, weight_decay=1e-4))}
for name, spec in chosen.items():
  results[name] = fit(spec.factory(learning_rate=DIGITS_LEARNING_RATES.get(name, 3e-3)))

# %%
print(f"{'optimizer':>24}  {'val accuracy':>12}  {'state bytes':>11}")
for name, h in results.items():
  print(f"{name:>24}  {h['val_accuracy'][-1]:>12.3f}  {h['state_bytes']:>11,}")
  zeroth_order = name in gradtx.OPTIMIZERS and gradtx.OPTIMIZERS[name].family == "scale_out"
  assert zeroth_order or h["val_accuracy"][-1] > 0.85, name  # MeZO needs far more steps than a gradient method

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, h in results.items():
  style = {"color": "k", "ls": "--"} if name == "optax.adamw" else {}  # the baseline
  smooth = np.convolve(h["loss"], np.ones(10) / 10, mode="valid")
  axes[0].plot(np.arange(10, len(h["loss"]) + 1), smooth, label=name, **style)
  axes[1].plot(h["step"], h["val_accuracy"], "o-", ms=3, label=name, **style)
axes[0].set(xlabel="step", ylabel="train loss (moving average)", yscale="log")
axes[1].set(xlabel="step", ylabel="validation accuracy", ylim=(0.5, 1))
axes[1].legend(fontsize="small", loc="lower right")
plt.tight_layout()
plt.show()
