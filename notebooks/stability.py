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
# # Gradient spikes: Adam, SPAM and Stable-SPAM
#
# Large-model training sees gradient spikes: single steps whose gradient is up to a thousand times the
# usual size ([SPAM, Huang et al. 2025](https://arxiv.org/abs/2501.06842)). Adam survives the step itself
# (its update is normalized), but its second moment `v` remembers the spike for about `1/(1-β2)` = 1000
# steps, and every later step is divided by `sqrt(v)`: training slows to a crawl. This notebook injects
# spikes into a small training run and compares
#
# - **Adam** (`optax.adam`), with and without spikes;
# - **Adam behind global-norm clipping** (`optax.clip_by_global_norm`), the usual guard;
# - **SPAM** (`gradtx.spam`): clips each coordinate whose `g²` exceeds `θ·v` (θ = 5000) to `sqrt(θ·v)`, and
#   resets the momenta every `reset_period` steps with a short warm-up after each reset;
# - **Stable-SPAM** (`gradtx.stable_spam`, [Huang et al. 2025](https://arxiv.org/abs/2502.17055)): clips
#   each tensor to an EMA of its largest entry (AdaClip), normalizes its norm by an EMA of past norms
#   (AdaGN), and resets the momenta periodically.
#
# Spikes appear in large runs on their own; here they are injected (every 100 steps the mini-batch
# gradient is multiplied by 1000) into an MLP on scikit-learn's digits, so the notebook runs on a CPU in
# seconds.

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
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) for a longer run with more spikes.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 600 if SMALL else 3000
SPIKE_EVERY, SPIKE_SCALE = 100, 1000.0
LEARNING_RATE, BATCH = 3e-3, 64

# %% [markdown]
# ## The run
#
# A 3-layer MLP, mini-batches of 64, a constant learning rate (so that a slowdown is the optimizer's, not
# the schedule's). The whole run is one `jax.lax.scan`, compiled once per optimizer; whether spikes are
# injected is an argument, so Adam with and without spikes share one compilation. SPAM and Stable-SPAM run
# at their official defaults (momentum resets every 500 and 1000 steps). Each step also records the
# optimizer's second moment, as `sqrt(mean(v))`: its estimate of the typical gradient coordinate.

# %%
images, labels = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(images))
x_all = jnp.asarray(images[order] / 16.0, jnp.float32)
y_all = jnp.asarray(labels[order], jnp.int32)
x_train, y_train, x_val, y_val = x_all[:1400], y_all[:1400], x_all[1400:], y_all[1400:]
batches = jnp.asarray(rng.integers(0, 1400, size=(STEPS, BATCH)))
spike_steps = np.arange(SPIKE_EVERY // 2, STEPS, SPIKE_EVERY)


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.l1, self.l2, self.l3 = nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 128, rngs=rngs), nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


graphdef, init_params = nnx.split(MLP(nnx.Rngs(0)))


def loss(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, params)(x), y).mean()


def second_moment_rms(state):
  """``sqrt(mean(v))`` of the (first) state field named ``nu`` that holds arrays."""
  nu = next(v for _, v in optax.tree_utils.tree_get_all_with_path(state, "nu") if jax.tree.leaves(v))
  return jnp.sqrt(sum(jnp.sum(x) for x in jax.tree.leaves(nu)) / optax.tree.size(nu))


def train(tx):
  """A jitted ``spikes -> (losses, sqrt(mean(v)), val accuracy)`` for one optimizer."""

  @jax.jit
  def run(spikes):
    def step(carry, inputs):
      params, state = carry
      t, idx = inputs
      value, grads = jax.value_and_grad(loss)(params, x_train[idx], y_train[idx])
      scale = jnp.where(spikes & (t % SPIKE_EVERY == SPIKE_EVERY // 2), SPIKE_SCALE, 1.0)
      updates, state = tx.update(jax.tree.map(lambda g: scale * g, grads), state, params)
      return (optax.apply_updates(params, updates), state), (value, second_moment_rms(state))

    carry = (init_params, tx.init(init_params))
    (params, _), (losses, v_rms) = jax.lax.scan(step, carry, (jnp.arange(STEPS), batches))
    accuracy = jnp.mean(nnx.merge(graphdef, params)(x_val).argmax(-1) == y_val)
    return losses, v_rms, accuracy

  return run


optimizers = {
    "Adam": optax.adam(LEARNING_RATE),
    "Adam + global-norm clip": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LEARNING_RATE)),
    "SPAM": gradtx.spam(LEARNING_RATE),
    "Stable-SPAM": gradtx.stable_spam(LEARNING_RATE),
}
runs = {}
for name, tx in optimizers.items():
  run = train(tx)
  if name == "Adam":
    runs["Adam, no spikes"] = jax.device_get(run(False))
  runs[name] = jax.device_get(run(True))


def final_loss(name):
  return float(np.mean(runs[name][0][-50:]))  # train loss averaged over the last 50 steps


print(f"{'':>24}  final train loss  val accuracy")
for name, (losses, _, accuracy) in runs.items():
  print(f"{name:>24}  {final_loss(name):16.4f}  {float(accuracy):12.3f}")

# %% [markdown]
# ## What happened
#
# Left: the training loss (moving average), spikes in red. Right: each optimizer's second moment.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for name, (losses, v_rms, _) in runs.items():
  style = {"color": "k", "ls": "--"} if name == "Adam, no spikes" else {}
  smooth = np.convolve(losses, np.ones(20) / 20, mode="valid")
  axes[0].plot(np.arange(20, STEPS + 1), smooth, label=name, **style)
  axes[1].plot(v_rms, label=name, lw=1.2, **style)
for ax in axes:
  for s in spike_steps:
    ax.axvline(s, color="r", alpha=0.2)
axes[0].set(xlabel="step", ylabel="train loss (moving average)", yscale="log", title="loss (red: spikes)")
axes[1].set(xlabel="step", ylabel="sqrt(mean v)", yscale="log", title="second moment")
axes[0].legend(fontsize="small")
plt.tight_layout()
plt.show()

# %% [markdown]
# A spike enters both of Adam's moments. The first moment carries it for about `1/(1-β1)` = 10 steps, so
# Adam keeps stepping along one mini-batch's gradient at several times its usual step size: the loss jumps
# by an order of magnitude. The second moment jumps by one to two orders of magnitude (`v` takes a
# thousandth of a million-fold square) and remembers the spike for about `1/(1-β2)` = 1000 steps, so each
# spike adds to the last, and later steps are divided by an inflated `sqrt(v)`.
#
# Global-norm clipping removes the spike before Adam sees it. SPAM clips each coordinate to
# `sqrt(5000·v)`, about 70 times its usual size: that tames coordinates that spike alone, but when the
# whole gradient spikes, 70× still goes into both moments (a smaller jump than Adam's). Stable-SPAM's
# per-tensor AdaClip and AdaGN bring the spiked gradient back to its usual size, and its run is hard to
# tell from the spike-free one. (When spikes hit only a few coordinates, SPAM's clipping catches them:
# `tests/stability/test_spikes.py` shows both cases.)
#
# The checks below are what the plots show.

# %%
clean = final_loss("Adam, no spikes")
assert final_loss("Adam") > 20 * clean, "spikes must hurt Adam"
clean_accuracy = float(runs["Adam, no spikes"][2])
for name in ("Adam + global-norm clip", "Stable-SPAM"):
  assert final_loss(name) < 5 * clean and float(runs[name][2]) > clean_accuracy - 0.03, name
assert final_loss("SPAM") < final_loss("Adam") / 3
first = spike_steps[0]
jump = {name: runs[name][1][first] / runs[name][1][first - 1] for name in optimizers}
print("second-moment jump at the first spike:", {name: round(float(j), 1) for name, j in jump.items()})
assert jump["Adam"] > 20 and jump["Adam + global-norm clip"] < 1.5 and jump["Stable-SPAM"] < 1.5
assert 1.5 < jump["SPAM"] < jump["Adam"] / 3
assert all(float(accuracy) > 0.9 for name, (_, _, accuracy) in runs.items() if name != "Adam")
