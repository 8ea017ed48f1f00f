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
# # Scale-out: gradtx on many devices
#
# 1. **Data parallelism** with `jax.pmap` and with `jax.shard_map`: each device takes a slice of the batch,
#    the gradients are averaged over the device axis (`lax.pmean(..., axis_name)`), and any optimizer then
#    runs unchanged on identical replicas.
# 2. **Sharded parameters** inside `shard_map`: each device holds a slice of every weight matrix. Statistics
#    that reduce over a whole parameter (LAMB's trust ratio, top-k clipping thresholds, SPAM's spike
#    statistics) must then reduce across devices too: gradtx's transformations take `axis_name` for that.
# 3. **Sharded state on a mesh** with `jax.jit`: the optimizer state is laid out like the parameters.
# 4. **State unlike its parameter** (low-rank factors): `gradtx.state_shardings` lays it out.
# 5. **Compressed means**: top-k messages with and without error feedback (EF21).
#
# Locally the notebook simulates 8 CPU devices (the first code cell sets `XLA_FLAGS` before JAX is
# imported). On a Colab TPU runtime it uses the TPU cores instead; on a runtime with a single GPU it falls
# back to the simulated CPU devices.

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

# Eight simulated CPU devices; this must run before JAX is imported (restart the kernel if it was).
# The flag only affects the CPU platform: TPU cores are used as they are.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sklearn.datasets import load_digits

import gradtx

devices = jax.devices() if jax.device_count() >= 2 else jax.devices("cpu")
devices = devices[: 1 << (min(len(devices), 8).bit_length() - 1)]  # a power of two, at most 8
N = len(devices)
print(f"{N} devices: {devices[0].platform}, e.g. {devices[0]}")
assert N >= 2, "this notebook needs several devices: set XLA_FLAGS before importing JAX"

# Small sizes keep the notebook to seconds on 2 CPU cores (it runs in the test suite);
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) for a longer run.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 100 if SMALL else 1000

# %% [markdown]
# ## 1. Data parallelism with `pmap`
#
# An MLP on scikit-learn's digits, as a plain dictionary of arrays. The global batch of 128 images is
# split into `N` slices, one per device. Each device computes the gradient of its slice, `lax.pmean`
# averages them over the axis named `"data"`, and LAMB updates identical replicas of the parameters and
# of its state. The averaged gradient is the full-batch gradient, so the run matches a single-device run
# on the whole batch, up to the order of floating-point additions.

# %%
images, labels = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
x_all = jnp.asarray(images / 16.0, jnp.float32)
y_all = jnp.asarray(labels, jnp.int32)
batches = rng.integers(0, len(images), size=(STEPS, 128))


def init_params(key):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (64, 128)) / 8.0, "b1": jnp.zeros(128),
          "w2": jax.random.normal(k2, (128, 10)) / np.sqrt(128), "b2": jnp.zeros(10)}


def loss(params, x, y):
  hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
  logits = hidden @ params["w2"] + params["b2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


tx = gradtx.lamb(1e-2, weight_decay=1e-4)
params = init_params(jax.random.key(0))


def dp_step(params, state, x, y):
  value, grads = jax.value_and_grad(loss)(params, x, y)
  grads = jax.lax.pmean(grads, axis_name="data")  # the full-batch gradient on every device
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state, jax.lax.pmean(value, axis_name="data")


def run(step, params, state, xs, ys):
  """All the steps in one ``lax.scan``: one dispatch instead of one per step."""
  def body(carry, batch):
    *carry, value = step(*carry, *batch)
    return tuple(carry), value

  (params, state), losses = jax.lax.scan(body, (params, state), (xs, ys))
  return params, losses


replicate = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (N, *jnp.shape(a))), tree)  # one copy each
per_device = lambda a: jnp.swapaxes(a.reshape(a.shape[0], N, -1, *a.shape[2:]), 0, 1)  # (steps, N, 128/N, ...)
xs, ys = x_all[batches], y_all[batches]

pmap_run = jax.pmap(lambda *args: run(dp_step, *args), axis_name="data", devices=devices)
dp_params, dp_losses = pmap_run(replicate(params), replicate(tx.init(params)), per_device(xs), per_device(ys))
dp_params, dp_losses = jax.tree.map(lambda a: a[0], dp_params), np.asarray(dp_losses[0])  # replica 0


def single_step(params, state, x, y):
  value, grads = jax.value_and_grad(loss)(params, x, y)
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state, value


one_params, one_losses = jax.jit(lambda *args: run(single_step, *args))(params, tx.init(params), xs, ys)
gap = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(dp_params), jax.tree.leaves(one_params)))
print(f"loss {dp_losses[0]:.3f} -> {dp_losses[-1]:.3f}; largest parameter difference to one device: {gap:.1e}")
assert dp_losses[-1] < 0.5 * dp_losses[0]
assert gap < 1e-4
np.testing.assert_allclose(dp_losses, one_losses, rtol=1e-4)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(one_losses, lw=3, alpha=0.4, label="1 device, whole batch")
axes[0].plot(dp_losses, "--", label=f"pmap over {N} devices")
axes[0].set(xlabel="step", ylabel="train loss", title="the same run", yscale="log")
axes[0].legend()
axes[1].plot(np.abs(dp_losses - np.asarray(one_losses)) / np.asarray(one_losses))
axes[1].set(xlabel="step", ylabel="relative loss difference", title="summation order only")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same run with `jax.shard_map` over a one-axis mesh: each step's batch is split along `"data"`
# (`P(None, "data")`: the steps axis stays whole), the parameters and state are replicated (`P()`), and
# the step function is the same `dp_step`. It gives the same losses and parameters as `pmap`.

# %%
# Auto axes: shard_map moves its inputs to where in_specs say (an Explicit mesh wants them placed first).
data_mesh = jax.make_mesh((N,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
shard_run = jax.jit(jax.shard_map(lambda *args: run(dp_step, *args), mesh=data_mesh,
                                  in_specs=(P(), P(), P(None, "data"), P(None, "data")), out_specs=(P(), P()),
                                  check_vma=False))
sm_params, sm_losses = shard_run(params, tx.init(params), xs, ys)
np.testing.assert_allclose(sm_losses, dp_losses, rtol=1e-5)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sm_params, dp_params)
print("shard_map run == pmap run")

# %% [markdown]
# ## 2. Sharded parameters need `axis_name`
#
# Now each device holds a slice of every parameter: the rows of each matrix are split over the mesh axis
# `"model"`, and so are its gradient and LAMB's moments. Inside `shard_map` each device sees only its
# slice, so a statistic of a whole parameter computed locally is wrong. LAMB scales each parameter's
# update by its trust ratio `‖w‖ / ‖u‖`: without `axis_name` each device uses the norms of its own slice;
# with `axis_name="model"` the squared norms are summed across devices first (a `psum`), and the sharded
# update equals the unsharded one.

# %%
model_mesh = jax.make_mesh((N,), ("model",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
matrices = {"w1": params["w1"], "w2": params["w2"]}  # rows divisible by N
grads = jax.grad(loss)(params, xs[0], ys[0])
grads = {"w1": grads["w1"], "w2": grads["w2"]}


def sharded_update(tx):
  """``tx.update`` inside ``shard_map``, every param-shaped leaf split by rows, scalars replicated."""
  state = tx.init(matrices)
  state_spec = optax.tree_map_params(tx, lambda _: P("model"), state, transform_non_params=lambda _: P())
  update = jax.shard_map(lambda g, s, p: tx.update(g, s, p)[0], mesh=model_mesh,
                         in_specs=(P("model"), state_spec, P("model")), out_specs=P("model"))
  return jax.jit(update)(grads, state, matrices)


reference = jax.jit(gradtx.lamb(1e-2).update)(grads, gradtx.lamb(1e-2).init(matrices), matrices)[0]
with_axis = sharded_update(gradtx.lamb(1e-2, axis_name="model"))
without_axis = sharded_update(gradtx.lamb(1e-2))
error = lambda u: max(float(jnp.abs(u[k] - reference[k]).max() / jnp.abs(reference[k]).max()) for k in u)
print(f"relative error of the sharded update: with axis_name {error(with_axis):.1e}, "
      f"without {error(without_axis):.1e}")
assert error(with_axis) < 1e-5 and error(without_axis) > 1e-2

# %% [markdown]
# The same holds for every gradtx statistic over a parameter or over the whole tree (`clip_by_coordinate`'s
# top-k threshold, SPAM's and Stable-SPAM's spike statistics, LARS's trust ratio, AGVM's gradient
# variance). Note that `optax.clip_by_global_norm` has no such argument: inside `shard_map` it clips by
# each device's own norm.
#
# ## 3. Sharded state on a mesh with `jax.jit`
#
# Without `shard_map`, `jax.jit` partitions the computation itself from the shardings of its inputs. Put
# the parameters on the mesh (rows of each matrix split over `"model"`), and `jax.jit(tx.init)` lays out
# each moment like its parameter; after an update the state keeps that layout, so memory per device
# shrinks with the number of devices. Below, colour = the device holding each block of `w1` and of LAMB's
# first and second moments.

# %%
explicit_mesh = jax.make_mesh((N,), ("model",), devices=devices)  # Explicit axes (the default)
with jax.set_mesh(explicit_mesh):
  sharded = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(explicit_mesh, P("model"))), matrices)
  lamb = gradtx.lamb(1e-2)
  state = jax.jit(lamb.init)(sharded)
  updates, state = jax.jit(lamb.update)(jax.tree.map(lambda g, p: jax.device_put(g, p.sharding), grads, sharded),
                                        state, sharded)

mu = optax.tree_utils.tree_get(state, "mu")
nu = optax.tree_utils.tree_get(state, "nu")
for name, tree in (("params", sharded), ("mu", mu), ("nu", nu), ("updates", updates)):
  assert tree["w1"].sharding.is_equivalent_to(sharded["w1"].sharding, 2), name
  print(f"{name:>8}: w1 {tree['w1'].sharding.spec}, {tree['w1'].addressable_shards[0].data.shape} per device")
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), updates, reference)


def owner_map(array):
  """Which of ``devices`` holds each element of a 2-D array (its position in the list)."""
  owners = np.zeros(array.shape)
  for shard in array.addressable_shards:
    owners[shard.index] = devices.index(shard.device)
  return owners


fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (name, tree) in zip(axes, (("w1", sharded), ("mu of w1", mu), ("nu of w1", nu))):
  ax.imshow(owner_map(tree["w1"]), aspect="auto", cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
  ax.set(title=name, xlabel="column", ylabel="row")
plt.suptitle(f"which of the {N} devices holds each block")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. State unlike its parameter: `gradtx.state_shardings`
#
# Some optimizer state does not have its parameter's shape: GaLore keeps an `(m, r)` or `(n, r)` projector
# and `(r, n)` or `(m, r)` moments per matrix; 8-bit optimizers keep a scale per block. `jax.jit(tx.init)`
# alone would put state that does not depend on the parameters' values on one device.
# `gradtx.state_shardings(tx, params, param_shardings)` gives every state leaf its sharding: a moment that
# shares a dimension with its parameter keeps the parameter's mesh axis on that dimension; counters, keys
# and factors that share no sharded dimension are replicated. Pass it as `out_shardings` of `init` and of
# the step, so the state starts and stays where it belongs.

# %%
auto_mesh = jax.make_mesh((N,), ("model",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
row_shardings = {k: NamedSharding(auto_mesh, P("model")) for k in matrices}  # rows split over the devices
galore = gradtx.galore(1e-2, rank=8)
with jax.set_mesh(auto_mesh):
  on_mesh = jax.device_put(matrices, row_shardings)
  galore_shardings = gradtx.state_shardings(galore, on_mesh, row_shardings)
  galore_state = jax.jit(galore.init, out_shardings=galore_shardings)(on_mesh)
  galore_step = jax.jit(galore.update, out_shardings=(row_shardings, galore_shardings))
  galore_updates, galore_state = galore_step(jax.device_put(grads, row_shardings), galore_state, on_mesh)

for path, leaf in jax.tree_util.tree_leaves_with_path(galore_state):
  if leaf.ndim == 2:
    where = "split" if not leaf.sharding.is_fully_replicated else "replicated"
    print(f"{jax.tree_util.keystr(path):>42}: {str(leaf.shape):>9} {str(leaf.sharding.spec):>22}  {where}")
leaves = galore_state[0].leaves
# w2 is (128, 10): GaLore projects its 10 columns, and the (128, 8) moments keep the rows' split.
assert leaves["w2"].inner.mu.shape == (128, 8) and not leaves["w2"].inner.mu.sharding.is_fully_replicated
# w1 is (64, 128): GaLore projects its 64 rows with a (64, 8) projector, which keeps the rows' split.
assert leaves["w1"].projector.basis.shape == (64, 8)
assert not leaves["w1"].projector.basis.sharding.is_fully_replicated
bytes_per_device = sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(galore_state))
print(f"GaLore state: {gradtx.state_nbytes(galore_state):,} bytes in all, {bytes_per_device:,} on each device")

# %% [markdown]
# ## 5. Compressed data-parallel means with error feedback
#
# When the network is the bottleneck, each worker sends a compressed gradient and the mean is taken of the
# messages. `gradtx.top_k(0.01)` keeps 1% of the coordinates (value + index), but the plain mean of top-k
# messages is biased: on a least-squares problem whose rows differ between workers it stalls.
# `compress_with_error_feedback(..., variant="ef21")` (EF21) sends the compressed *change* of each worker's
# estimate instead and converges like the uncompressed mean, for the same 16 bytes per worker and step.
# The workers are the `pmap` devices; `axis_name` is the axis the mean is taken over.

# %%
workers_rng = np.random.default_rng(1)
DIM, ROWS = 200, 100
a_workers = workers_rng.normal(size=(N, ROWS, DIM)) / np.sqrt(ROWS)
b_workers = np.einsum("nmd,nd->nm", a_workers, workers_rng.normal(size=(N, DIM)))  # each its own optimum
x_best = np.linalg.lstsq(a_workers.reshape(-1, DIM), b_workers.reshape(-1), rcond=None)[0]
objective = lambda x: 0.5 * np.mean(np.sum((np.einsum("nmd,...d->...nm", a_workers, x) - b_workers) ** 2, -1), -1)
smooth = float(np.linalg.eigvalsh(np.einsum("nmd,nme->de", a_workers, a_workers) / N).max())
LS_STEPS = 600 if SMALL else 3000


def compressed_gd(tx, lr):
  def worker(a, b):
    def body(carry, _):
      x, s = carry
      u, s = tx.update(a.T @ (a @ x - b), s, x)  # the worker's own gradient in, the workers' mean out
      return (x - lr * u, s), x

    x0 = jnp.zeros(DIM)
    return jax.lax.scan(body, (x0, tx.init(x0)), None, LS_STEPS)[1]

  xs = jax.pmap(worker, axis_name="data", devices=devices)(jnp.asarray(a_workers, jnp.float32),
                                                           jnp.asarray(b_workers, jnp.float32))
  return (objective(np.asarray(xs[0], np.float64)) - objective(x_best)) / (objective(np.zeros(DIM)) - objective(x_best))


top1 = gradtx.top_k(0.01)
curves = {
    "dense mean": compressed_gd(optax.stateless(lambda g, _: jax.lax.pmean(g, "data")), 1.0 / smooth),
    "top-1%, no feedback": compressed_gd(gradtx.compress(top1, axis_name="data"), 0.3 / smooth),
    "top-1%, EF21": compressed_gd(gradtx.compress_with_error_feedback(top1, variant="ef21", axis_name="data"),
                                  0.3 / smooth),
}
sent = top1.message_bytes(jax.ShapeDtypeStruct((DIM,), jnp.float32))
print(f"bytes per worker and step: dense {4 * DIM}, top-1% {sent}")
for name, gaps in curves.items():
  print(f"{name:>20}: relative gap after {LS_STEPS} steps {gaps[-1]:.1e}")
assert curves["top-1%, no feedback"][-1] > 0.1  # plain compression stalls
assert curves["top-1%, EF21"][-1] < 1e-3  # error feedback converges on 2% of the traffic

plt.figure(figsize=(6, 3.2))
for name, gaps in curves.items():
  plt.semilogy(np.maximum(gaps, 1e-16), label=name)
plt.xlabel("step")
plt.ylabel("(f(x) − f*) / (f(0) − f*)")
plt.title(f"{N} workers, heterogeneous least squares")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Zeroth order with shared randomness: one float per replica
#
# MeZO estimates the gradient from two loss evaluations along a random direction `z`,
# `ĝ = (L(θ+εz) − L(θ−εz)) / 2ε`, and `z` is regenerated from a seed, never stored. Under `axis_name` every
# replica draws the same `z`, evaluates the loss on its own micro-batch, and the replicas average the
# scalar `ĝ` (one float per perturbation, instead of a whole gradient). `mezo_adam` feeds the estimate to
# Adam; the training step passes `loss_fn` and never runs a backward pass. The data-parallel run equals the
# single-device run on the whole batch.

# %%
mezo = gradtx.mezo_adam(3e-3, eps=1e-2, num_samples=4, axis_name="data")
mezo_one = gradtx.mezo_adam(3e-3, eps=1e-2, num_samples=4)
MEZO_STEPS = 100 if SMALL else 2000


def mezo_run(tx, params, xs, ys, axis_name=None):
  def step(carry, batch):
    params, state = carry
    x, y = batch
    local_loss = lambda p: loss(p, x, y)
    value = local_loss(params) if axis_name is None else jax.lax.pmean(local_loss(params), axis_name)
    zeros = jax.tree.map(jnp.zeros_like, params)  # the incoming gradient is ignored: no backward pass
    updates, state = tx.update(zeros, state, params, loss_fn=local_loss)
    return (optax.apply_updates(params, updates), state), value

  return jax.lax.scan(step, (params, tx.init(params)), (xs, ys))[1]


zo_xs, zo_ys = xs[:MEZO_STEPS], ys[:MEZO_STEPS]
mezo_dp = jax.pmap(lambda x, y: mezo_run(mezo, params, x, y, "data"), axis_name="data", devices=devices)(
    per_device(zo_xs), per_device(zo_ys))[0]
mezo_single = jax.jit(lambda x, y: mezo_run(mezo_one, params, x, y))(zo_xs, zo_ys)
print(f"MeZO-Adam: loss {float(mezo_dp[0]):.3f} -> {float(mezo_dp[-1]):.3f} in {MEZO_STEPS} steps; "
      f"{N} replicas send 4 floats each per step")
np.testing.assert_allclose(mezo_dp, mezo_single, rtol=1e-3)
assert mezo_dp[-10:].mean() < 0.9 * mezo_dp[0]
