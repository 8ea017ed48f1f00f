"""Test-wide set-up: 8 simulated CPU devices, set before JAX is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

if os.environ.get("GRADTX_TOLERANCE_AUDIT"):  # tests/tolerance_audit.py: how much of each tolerance a run uses
  from tests import tolerance_audit  # noqa: E402

  tolerance_audit.install(os.environ["GRADTX_TOLERANCE_AUDIT"])
