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
# # Memory-efficient training
#
# AdamW keeps two float32 moments per parameter: 8 bytes, twice the float32 weights themselves (54 GB for
# LLaMA-7B). gradtx has three ways to shrink that state:
#
# - **8-bit state** (Dettmers et al. 2022, [8-bit Optimizers via Block-wise
#   Quantization](https://arxiv.org/abs/2110.02861)): `gradtx.quantize_state(inner)` stores the moments of
#   *any* optax transformation as uint8 codes of a 256-value dynamic map with one float32 scale per block
#   of 256; `gradtx.adamw_8bit`, `lion_8bit` and `adabelief_8bit` are the packaged optimizers (about
#   2.03 bytes per parameter for AdamW).
# - **Low-rank projection** (GaLore, APOLLO, ...): moments of gradients projected to rank `r`, for the
#   weight matrices. The cells below pick these up from the registry (family `lowrank`).
# - **Fewer moments**: sign-momentum methods such as Lion keep one.
#
# The notebook trains gradtx's small character-level transformer (Flax nnx, LLaMA-shaped blocks) with
# AdamW and the memory-efficient optimizers, and then counts the state at LLaMA sizes from shapes alone.

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

import gradtx
from gradtx.models import CharLM, CharLMConfig, cross_entropy_loss, load_stdlib_corpus

# Small sizes keep the notebook to seconds on 2 CPU cores (it runs in the test suite);
# set GRADTX_NOTEBOOK_FULL=1 (or SMALL = False) for the demo's model size and a longer run.
SMALL = os.environ.get("GRADTX_NOTEBOOK_FULL", "0") != "1"
STEPS = 150 if SMALL else 1000
CONFIG = CharLMConfig(seq_len=32, d_model=64, num_layers=1, num_heads=4) if SMALL else CharLMConfig()
BATCH = 16

# %% [markdown]
# ## The optimizers, from the registry
#
# Every registered optimizer of the `quantization` and `lowrank` families, plus Lion (one moment) and
# optax's AdamW as the baseline. A low-rank optimizer (one with a `rank_arg` in the registry) gets a rank of a
# quarter of the model width; APOLLO-Mini keeps its rank 1.

# %%
MEMORY_FAMILIES = ("quantization", "lowrank")
# others: Adam's; GaLore's official setting is lr 0.01 with its scale 0.25 on the projected update.
LEARNING_RATES = {"optax.adamw": 3e-3, "lion": 1e-3, "lion_8bit": 1e-3, "galore": 1e-2, "q_galore": 1e-2,
                  "galore_dct": 1e-2}
RANK = CONFIG.d_model // 4


def build(name, learning_rate):
  if name == "optax.adamw":
    return optax.adamw(learning_rate, weight_decay=1e-2)
  spec = gradtx.OPTIMIZERS[name]
  kwargs = {spec.rank_arg: RANK} if spec.rank_arg else {}  # the registry names each free rank argument
  return spec.factory(learning_rate=learning_rate, **kwargs)


memory_optimizers = [n for n, s in gradtx.OPTIMIZERS.items() if s.family in MEMORY_FAMILIES]
low_rank = [n for n in memory_optimizers if gradtx.OPTIMIZERS[n].family != "quantization"]
print("memory-efficient optimizers registered:", memory_optimizers)
print("low-rank ones:", low_rank or "none yet")
# The small run trains AdamW, its 8-bit twin and GaLore; the full run trains them all.
trained = ["optax.adamw", "adamw_8bit", "galore"] if SMALL else ["optax.adamw", "lion", *memory_optimizers]

# %% [markdown]
# ## What the state holds
#
# `gradtx.memory_report(tx, params)` runs `tx.init` under `jax.eval_shape`: it lists every state array
# with its shape, dtype and bytes without allocating anything. For the 8-bit AdamW, the large kernels'
# moments are uint8 codes of the kernel's shape plus a float32 scale per block of 256; tensors under
# `min_size` = 4096 elements (norm scales, here also the position table) stay in float32, as in
# bitsandbytes.

# %%
corpus = load_stdlib_corpus(400_000)
initial = nnx.jit(lambda: CharLM(CONFIG, rngs=nnx.Rngs(0)))()  # one compilation instead of one per initializer
params = nnx.state(initial, nnx.Param)
n_params = sum(x.size for x in jax.tree.leaves(params))
print(f"CharLM: {n_params:,} parameters, {4 * n_params:,} bytes in float32")

report = gradtx.memory_report(gradtx.adamw_8bit(1e-3), params)
for leaf in report.leaves:  # the first moment's leaves for one kernel and for the position table
  if "mu" in leaf.path and ("['q']" in leaf.path or "pos" in leaf.path):
    print(f"{leaf.path[-60:]:>60}  {str(leaf.shape):>10}  {leaf.dtype:>8}  {leaf.nbytes:>7,} bytes")
print(f"total: {report.state_bytes:,} bytes ({report.state_bytes / n_params:.2f} per parameter)")

# %% [markdown]
# ## Training
#
# The same initialization and batches for every optimizer; a cosine schedule with warm-up.

# %%
val_rng = np.random.default_rng(1)
val_batches = [corpus.batch(val_rng, 32, CONFIG.seq_len, "val") for _ in range(4)]


@nnx.jit
def train_step(model, optimizer, x, y):
  value, grads = nnx.value_and_grad(cross_entropy_loss)(model, x, y)
  optimizer.update(model, grads)
  return value


@nnx.jit
def val_loss(model, x, y):
  return cross_entropy_loss(model, x, y)


def fit(name):
  schedule = optax.warmup_cosine_decay_schedule(0.0, LEARNING_RATES.get(name, 3e-3), STEPS // 10, STEPS)
  model = nnx.clone(initial)
  optimizer = nnx.Optimizer(model, build(name, schedule), wrt=nnx.Param)
  rng = np.random.default_rng(0)
  losses = [float(train_step(model, optimizer, *corpus.batch(rng, BATCH, CONFIG.seq_len))) for _ in range(STEPS)]
  return {"loss": np.array(losses),
          "val_loss": float(np.mean([val_loss(model, x, y) for x, y in val_batches])),
          "state_bytes": gradtx.state_nbytes(nnx.state(optimizer, nnx.OptState))}


results = {name: fit(name) for name in trained}
adamw = results["optax.adamw"]
print(f"{'':>14}  val loss  state bytes  vs AdamW")
for name, r in results.items():
  print(f"{name:>14}  {r['val_loss']:8.4f}  {r['state_bytes']:11,}  {r['state_bytes'] / adamw['state_bytes']:7.3f}x")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
for name, r in results.items():
  style = {"color": "k", "ls": "--"} if name == "optax.adamw" else {}
  axes[0].plot(np.arange(10, STEPS + 1), np.convolve(r["loss"], np.ones(10) / 10, "valid"), label=name, **style)
axes[0].set(xlabel="step", ylabel="train loss (moving average)", title=f"CharLM, {n_params:,} parameters")
axes[0].legend()
names = list(results)
axes[1].barh(names, [results[n]["state_bytes"] / n_params for n in names], color="tab:gray")
axes[1].set(xlabel="optimizer-state bytes per parameter", title="state")
axes[1].invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# Quantizing the moments costs little accuracy here: the 8-bit run follows the float32 one. On this small
# model the saving is below the 4× of large models, since tensors under `min_size` stay in float32.
# GaLore keeps its Adam moments in a rank-d/4 subspace of every matrix (plus the projector), refreshed by an
# SVD of the gradient every 200 steps; vectors (norm scales) keep full-size moments.

# %%
assert results["adamw_8bit"]["val_loss"] < 1.05 * adamw["val_loss"]
assert results["adamw_8bit"]["state_bytes"] < 0.5 * adamw["state_bytes"]
assert results["galore"]["state_bytes"] < 0.75 * adamw["state_bytes"]  # rank d/4 moments and projectors
assert results["galore"]["val_loss"] < 1.15 * adamw["val_loss"]
for name, r in results.items():
  assert r["val_loss"] < 0.8 * r["loss"][0], name  # every optimizer learns

# %% [markdown]
# ## `quantize_state` wraps any optax transformation
#
# `adamw_8bit` is `quantize_state` around AdamW; the wrapper takes any transformation whose state has the
# named fields (`mu` and `nu` by default), here optax's AdaBelief and a chain with gradient clipping:

# %%
for label, inner in (("optax.adabelief", optax.adabelief(1e-3)),
                     ("clip + optax.adam", optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)))):
  full = gradtx.state_nbytes(jax.eval_shape(inner.init, params))
  small = gradtx.memory_report(gradtx.quantize_state(inner), params).state_bytes
  print(f"{label:>18}: {full:,} -> {small:,} bytes")
  assert small < 0.5 * full

# %% [markdown]
# ## At LLaMA sizes
#
# The same count at the sizes of GaLore's LLaMA pre-training configurations (float32 parameters, a
# 32,000-token vocabulary, untied head), built from `jax.ShapeDtypeStruct`s, so a 7B model costs nothing.
# A low-rank optimizer gets GaLore's rank for each size. (`benchmarks/memory.py` prints this table for
# every registered optimizer.)

# %%
LLAMA = {"60M": (512, 1376, 8, 128), "130M": (768, 2048, 12, 256), "350M": (1024, 2736, 24, 256),
         "1B": (2048, 5461, 24, 512), "7B": (4096, 11008, 32, 1024)}  # d, d_ff, layers, GaLore's rank
if SMALL:
  LLAMA = {s: LLAMA[s] for s in ("60M", "7B")}


def llama_params(d, f, layers, vocab=32000):
  leaf = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  layer = lambda: {**{k: leaf(d, d) for k in ("q", "k", "v", "o")}, "gate": leaf(d, f), "up": leaf(d, f),
                   "down": leaf(f, d), "attn_norm": leaf(d), "mlp_norm": leaf(d)}
  return {"embed": leaf(vocab, d), "layers": [layer() for _ in range(layers)], "norm": leaf(d),
          "head": leaf(d, vocab)}


def llama_state_bytes(name, size):
  d, f, layers, rank = LLAMA[size]
  if name == "optax.adamw":
    tx = optax.adamw(1e-3)
  else:
    spec = gradtx.OPTIMIZERS[name]
    tx = spec.build(**({spec.rank_arg: rank} if spec.rank_arg else {}))
  return gradtx.memory_report(tx, llama_params(d, f, layers)).state_bytes


# The small run tabulates one optimizer of each kind; the full run every registered one.
table_names = ["optax.adamw", "lion", "adamw_8bit", "galore", "apollo_mini"] if SMALL else [
    "optax.adamw", "lion", *memory_optimizers]
gib = {n: [llama_state_bytes(n, s) / 2**30 for s in LLAMA] for n in table_names}
n_llama = [sum(np.prod(x.shape) for x in jax.tree.leaves(llama_params(*LLAMA[s][:3]))) for s in LLAMA]
print(f"{'GiB of state':>16}" + "".join(f"{s:>9}" for s in LLAMA))
for name in table_names:
  print(f"{name:>16}" + "".join(f"{g:9.2f}" for g in gib[name]))
print(f"{'(params)':>16}" + "".join(f"{n / 1e9:8.2f}B" for n in n_llama))
assert abs(gib["optax.adamw"][-1] * 2**30 / n_llama[-1] - 8.0) < 0.01  # two float32 moments
assert gib["adamw_8bit"][-1] < 0.26 * gib["optax.adamw"][-1]

fig, ax = plt.subplots(figsize=(8, 3.5))
width = 0.8 / len(table_names)
for i, name in enumerate(table_names):
  ax.bar(np.arange(len(LLAMA)) + i * width, gib[name], width, label=name)
ax.set_xticks(np.arange(len(LLAMA)) + 0.4 - width / 2, [f"LLaMA-{s}" for s in LLAMA])
ax.set(ylabel="optimizer state (GiB)", yscale="log", title="state at LLaMA sizes (float32 params)")
ax.legend(fontsize="small", ncol=2)
plt.tight_layout()
plt.show()
