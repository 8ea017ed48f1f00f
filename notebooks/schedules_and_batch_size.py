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
# # Schedules and batch size with gradtx
#
# Three tools from `gradtx.schedules`, on a small logistic-regression problem that runs on a CPU:
#
# 1. **Refined schedules** (Defazio et al., [When, Why and How Much?](https://arxiv.org/abs/2310.07831)):
#    record the gradient norms of a first run with `gradtx.record_grad_norms`, then turn them into a
#    schedule `η_t ∝ w_t Σ_{p>t} w_p`, `w = ‖g‖⁻²`, with `gradtx.refined_schedule`.
# 2. **Batch-size scaling rules** (Granziol et al., [JMLR 2022](https://arxiv.org/abs/2006.09092)):
#    `gradtx.rescale_learning_rate` — linear for SGD, square root for adaptive methods.
# 3. **Adaptive batch sizes** (Lau et al., [AdAdaGrad](https://arxiv.org/abs/2402.11215)): `gradtx.adadagrad`
#    grows the batch when the per-example gradients are too noisy (the norm test), and a training loop that
#    follows its recommendation while compiling once per batch-size bucket.

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

import gradtx

# Small sizes keep the notebook well under a minute on 2 CPU cores (it runs in the test suite);
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) for longer runs.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 300 if SMALL else 3000
N_EXAMPLES, DIM = (2048, 32) if SMALL else (20000, 100)

# %% [markdown]
# ## The problem
#
# Binary logistic regression with 10% flipped labels, so the gradient noise never vanishes.

# %%
rng = np.random.default_rng(0)
w_true = rng.standard_normal(DIM) / np.sqrt(DIM) * 3.0
features = rng.standard_normal((N_EXAMPLES, DIM)).astype(np.float32)
labels = (features @ w_true > 0).astype(np.float32)
flip = rng.random(N_EXAMPLES) < 0.1
labels = np.where(flip, 1.0 - labels, labels).astype(np.float32)
X, Y = jnp.asarray(features), jnp.asarray(labels)


def example_loss(w, x, y):
  """Logistic loss of one example."""
  return optax.sigmoid_binary_cross_entropy(x @ w, y)


@jax.jit
def full_loss(w):
  return jnp.mean(jax.vmap(example_loss, in_axes=(None, 0, 0))(w, X, Y))


print(f"{N_EXAMPLES} examples, {DIM} features, loss at zero: {float(full_loss(jnp.zeros(DIM))):.4f}")

# %% [markdown]
# ## 1. Refined schedules
#
# First run: SGD with a linear-decay schedule. `record_grad_norms(STEPS)` at the head of the
# chain stores the ℓ2 norm of every mini-batch gradient in the optimizer state (use `ord=1` for Adam-type
# optimizers and `refined_schedule(..., kind="adam")`).

# %%
BATCH, PEAK_LR = 32, 1.0
batches = jnp.asarray(rng.integers(0, N_EXAMPLES, size=(STEPS, BATCH)))


def train(schedule):
  """One run of mini-batch SGD; returns the final params and the optimizer state."""
  tx = optax.chain(gradtx.record_grad_norms(STEPS), optax.sgd(schedule))
  batch_loss = lambda w, idx: jnp.mean(jax.vmap(example_loss, in_axes=(None, 0, 0))(w, X[idx], Y[idx]))

  def step(carry, idx):
    w, state = carry
    updates, state = tx.update(jax.grad(batch_loss)(w, idx), state, w)
    return (optax.apply_updates(w, updates), state), None

  w0 = jnp.zeros(DIM)
  (w, state), _ = jax.lax.scan(step, (w0, tx.init(w0)), batches)
  return w, state


linear = gradtx.linear_decay(PEAK_LR, total_steps=STEPS)
w_linear, state_linear = jax.jit(lambda: train(linear))()
norms = gradtx.recorded_grad_norms(state_linear)
print(f"recorded {norms.shape[0]} gradient norms; final loss with linear decay: {float(full_loss(w_linear)):.4f}")

# %% [markdown]
# Second run: the schedule refined from those norms (median-filtered over 10% of the run, as in the official
# code). It is an ordinary optax schedule, jit-compatible. On this small convex problem, whose gradient norms
# change little, both schedules end at about the same loss; the paper's gains come from runs whose norms
# change a lot (large early norms give the refined schedule a warm-up).

# %%
refined = gradtx.refined_schedule(norms, peak_value=PEAK_LR)
w_refined, _ = jax.jit(lambda: train(refined))()
print(f"final loss with the refined schedule: {float(full_loss(w_refined)):.4f}")

steps = np.arange(STEPS)
refined_values = np.array([float(refined(s)) for s in steps])
linear_values = np.array([float(linear(s)) for s in steps])
assert abs(refined_values.max() - PEAK_LR) < 1e-5 and refined_values[-1] == 0.0

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(steps, norms, lw=0.6, alpha=0.6, label="recorded ‖g‖")
axes[0].plot(steps, gradtx.smooth_grad_norms(norms), lw=2, label="median-filtered")
axes[0].set(xlabel="step", ylabel="gradient norm", title="First run (linear decay)")
axes[0].legend()
axes[1].plot(steps, linear_values, label="linear decay")
axes[1].plot(steps, refined_values, label="refined")
axes[1].set(xlabel="step", ylabel="learning rate", title="Schedules")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# With constant gradient norms the refined schedule *is* linear decay (the paper's worst case):

# %%
flat = gradtx.refined_schedule(np.ones(11), peak_value=1.0)
print([round(float(flat(s)), 2) for s in range(11)])

# %% [markdown]
# ## 2. Batch-size scaling rules
#
# A learning rate tuned at batch size 32, moved to batch size 256: ×8 for SGD, ×√8 for Adam. Schedules are
# rescaled the same way.

# %%
print("SGD :", gradtx.rescale_learning_rate(0.1, 32, 256, rule="linear"))
print("Adam:", round(gradtx.rescale_learning_rate(1e-3, 32, 256, rule="sqrt"), 6))
scaled_schedule = gradtx.rescale_learning_rate(linear, 32, 256, rule="sqrt")
print("rescaled schedule at step 0:", round(float(scaled_schedule(0)), 4))

# %% [markdown]
# ## 3. Growing the batch with AdAdaGrad
#
# `gradtx.adadagrad` steps AdaGrad with the mean of the per-example gradients it is given
# (`per_example_grads`, from `jax.vmap(jax.grad(example_loss))`) and keeps the recommended next batch size
# in `state.batch_size`: it grows whenever the norm test `Σ_j Var_i(g_ij) / b ≤ η² ‖ḡ‖²` fails, never
# shrinks, and stops at `max_batch_size`.
#
# A new batch size means new array shapes, so a jitted step would recompile at every change. The loop
# below rounds the recommendation up to a power of two (a *bucket*): the step compiles once per bucket, and
# the batch it uses is never smaller than the recommendation. (The alternative is a fixed micro-batch with
# gradient accumulation; pass `micro_batch_size=m` when the rows are micro-batch means.)

# %%
INITIAL_BATCH, MAX_BATCH, ETA, ADA_LR = 8, 1024, 1.0, 0.1
ADA_STEPS = 120 if SMALL else 600
tx = gradtx.adadagrad(ADA_LR, initial_batch_size=INITIAL_BATCH, max_batch_size=MAX_BATCH, eta=ETA)
per_example_grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))
compiled_buckets = set()


@jax.jit
def ada_step(w, state, idx):
  compiled_buckets.add(idx.shape[0])  # runs once per compilation, i.e. per bucket
  rows = per_example_grads(w, X[idx], Y[idx])
  updates, state = tx.update(rows.mean(0), state, w, per_example_grads=rows)
  return optax.apply_updates(w, updates), state


def bucket(batch_size):
  return min(1 << (int(batch_size) - 1).bit_length(), MAX_BATCH)


w, state = jnp.zeros(DIM), tx.init(jnp.zeros(DIM))
history = {"recommended": [], "used": [], "samples": [], "loss": []}
samples = 0
for step in range(ADA_STEPS):
  used = bucket(state.batch_size)
  idx = jnp.asarray(rng.integers(0, N_EXAMPLES, size=used))
  history["recommended"].append(int(state.batch_size))
  w, state = ada_step(w, state, idx)
  samples += used
  history["used"].append(used)
  history["samples"].append(samples)
  history["loss"].append(float(full_loss(w)))

recommended = np.array(history["recommended"])
assert np.all(np.diff(recommended) >= 0) and recommended[-1] > INITIAL_BATCH
print(f"batch size {INITIAL_BATCH} -> {int(state.batch_size)} in {ADA_STEPS} steps, final loss {history['loss'][-1]:.4f}")
print(f"{len(compiled_buckets)} compilations, one per bucket: {sorted(compiled_buckets)}")

# %% [markdown]
# For comparison: AdaGrad with the initial batch size held fixed, for the same number of examples. Both end
# at a similar loss, but AdAdaGrad gets there in about a hundred times fewer (larger, parallelisable) steps.

# %%
fixed_tx = optax.chain(gradtx.scale_by_adagrad(), optax.scale_by_learning_rate(ADA_LR))


@jax.jit
def fixed_run(all_idx):
  def step(carry, idx):
    w, state = carry
    grads = jax.grad(lambda w: jnp.mean(jax.vmap(example_loss, in_axes=(None, 0, 0))(w, X[idx], Y[idx])))(w)
    updates, state = fixed_tx.update(grads, state, w)
    w = optax.apply_updates(w, updates)
    return (w, state), full_loss(w)

  w0 = jnp.zeros(DIM)
  return jax.lax.scan(step, (w0, fixed_tx.init(w0)), all_idx)[1]


fixed_steps = samples // INITIAL_BATCH
fixed_loss = np.asarray(fixed_run(jnp.asarray(rng.integers(0, N_EXAMPLES, size=(fixed_steps, INITIAL_BATCH)))))
fixed_samples = INITIAL_BATCH * np.arange(1, fixed_steps + 1)
print(f"fixed batch {INITIAL_BATCH}: {fixed_steps} steps, final loss {fixed_loss[-1]:.4f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].step(np.arange(ADA_STEPS), history["recommended"], where="post", label="recommended (state.batch_size)")
axes[0].step(np.arange(ADA_STEPS), history["used"], where="post", label="used (power-of-two bucket)")
axes[0].set(xlabel="step", ylabel="batch size", yscale="log", title="AdAdaGrad batch-size growth")
axes[0].legend()
axes[1].plot(history["samples"], history["loss"], label=f"AdAdaGrad ({ADA_STEPS} steps)")
axes[1].plot(fixed_samples, fixed_loss, label=f"AdaGrad, batch {INITIAL_BATCH} ({fixed_steps} steps)")
axes[1].set(xlabel="examples processed", ylabel="full-batch loss", xscale="log", title="Loss")
axes[1].legend()
plt.tight_layout()
plt.show()
