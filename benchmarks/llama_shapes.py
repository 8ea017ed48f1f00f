"""LLaMA parameter shapes (GaLore's pre-training configs) and the machine/version header of the results.

Shapes follow ``jiaweizzhao/GaLore@8460814 configs/llama_{60m,130m,350m,1b,7b}.json`` (HF ``LlamaForCausalLM``,
vocabulary 32000, untied lm head) in the JAX convention: kernels are ``(in, out)``. Each layer holds q/k/v/o
``(d, d)``, gate/up ``(d, f)``, down ``(f, d)`` and two RMSNorm scales ``(d,)``; the model adds the token
embedding ``(V, d)``, a final RMSNorm and the lm head ``(d, V)``.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
from typing import Any

import jax
import jax.numpy as jnp

#: name -> (hidden size d, intermediate size f, layers, GaLore's pre-training rank for that size).
LLAMA_CONFIGS = {
    "60M": (512, 1376, 8, 128),
    "130M": (768, 2048, 12, 256),
    "350M": (1024, 2736, 24, 256),
    "1B": (2048, 5461, 24, 512),
    "7B": (4096, 11008, 32, 1024),
}
VOCAB_SIZE = 32000


def llama_params(d: int, f: int, layers: int, vocab: int = VOCAB_SIZE, dtype: Any = jnp.float32) -> dict:
  """The parameter tree of a LLaMA model as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
  leaf = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
  layer = lambda: {
      "self_attn": {name: leaf(d, d) for name in ("q_proj", "k_proj", "v_proj", "o_proj")},
      "mlp": {"gate_proj": leaf(d, f), "up_proj": leaf(d, f), "down_proj": leaf(f, d)},
      "input_layernorm": leaf(d),
      "post_attention_layernorm": leaf(d),
  }
  return {
      "embed_tokens": leaf(vocab, d),
      "layers": {str(i): layer() for i in range(layers)},
      "norm": leaf(d),
      "lm_head": leaf(d, vocab),
  }


def num_params(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def header(title: str, notes: list[str]) -> str:
  """A Markdown header: date, machine, load, versions, and the benchmark's own notes."""
  import numpy
  import optax

  import gradtx

  load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
  lines = [
      f"# {title}",
      "",
      f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
      f"- machine: {_cpu_model()}, {os.cpu_count()} cores, {jax.devices()[0].platform} backend; load average "
      f"(1, 5, 15 min) at the end: {load}",
      f"- versions: Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
      f"numpy {numpy.__version__}, gradtx {gradtx.__version__}",
      f"- command: `python {' '.join(sys.argv)}`",
      *[f"- {note}" for note in notes],
      "",
  ]
  return "\n".join(lines)
