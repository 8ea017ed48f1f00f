"""Bad construction arguments, table-driven over every registered optimizer and every exported factory.

DESIGN.md contract item 10: a wrong type or range raises at construction (``ValueError``, or ``TypeError``),
and the message names the argument as the user wrote it (backquoted), the value given and what is allowed.

:data:`ARGS` classifies every argument of every factory below by name, :data:`OVERRIDES` where a factory gives
a name another meaning, and :data:`NOT_NUMERIC` lists the arguments that are not numbers (modes, masks,
axes, callables, trees). A factory argument that none of them classifies fails
:func:`test_every_argument_is_classified`: a new argument gets a row here when it is added.

Each numeric kind lists its out-of-range values; every numeric argument also gets the values a config file
or a PyTorch habit produces: a string (``'1e-8'``), a tuple (``(0.9, 0.999)``), NaN, ``inf`` (unless the
kind gives ``inf`` a meaning) and, for integers, a float. Construction only, nothing is jitted.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax.numpy as jnp
import optax
import pytest

import gradtx
from gradtx import lowrank
from gradtx.registry import OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class Kind:
  """A kind of argument: the wording of what is allowed and the values outside it."""

  allowed: str  # must appear in every message for this kind
  out_of_range: tuple = ()
  integer: bool = False
  allow_inf: bool = False


SCHEDULE = Kind("[0.0, inf)", (-0.1,))  # learning_rate, weight_decay: a float >= 0 or an optax schedule
BETA = Kind("[0.0, 1.0)", (1.0, -0.1))  # EMA decay rates
FRACTION = Kind("[0.0, 1.0]", (-0.1, 1.5))
OPEN_FRACTION = Kind("(0.0, 1.0]", (0.0, 1.5))
POSITIVE = Kind("(0.0, inf)", (0.0, -1.0))
NONNEGATIVE = Kind("[0.0, inf)", (-1.0,))
REAL = Kind("a real number")
INT = Kind("int", integer=True)  # any int (seeds, axes)


def int_at_least(low: int) -> Kind:
  return Kind(f"int >= {low}", (low - 1,), integer=True)


#: Every argument name, by kind. ``None`` defaults stay allowed (an optional argument); the bad values are
#: tried on top of it.
ARGS: dict[str, Kind] = {
    # full-optimizer scalars
    "learning_rate": SCHEDULE,
    "weight_decay": SCHEDULE,
    # moment decay rates
    "b1": BETA,
    "b2": BETA,
    "momentum": BETA,
    "gamma1": BETA,
    "gamma2": BETA,
    # ε in a denominator that is exactly 0 on a coordinate whose gradient (or curvature) is 0: ε = 0 gives
    # 0/0 there. Methods whose denominator stays positive override it with NONNEGATIVE below.
    "eps": POSITIVE,
    "adam_eps": POSITIVE,
    "eps_root": NONNEGATIVE,
    # curvature
    "hessian_power": Kind("(0.0, 1.0]", (0.0, 1.5)),
    "gamma": POSITIVE,
    "rho": POSITIVE,
    "damping": POSITIVE,
    "gamma_init": POSITIVE,
    "gamma_min": NONNEGATIVE,
    "batch_tokens": POSITIVE,
    "clip_norm": POSITIVE,
    # geometry
    "delta": POSITIVE,
    "wd_ratio": FRACTION,
    "dampening": FRACTION,
    "phi_min": NONNEGATIVE,
    "phi_max": POSITIVE,
    "trust_coefficient": POSITIVE,
    # low-rank
    "scale": NONNEGATIVE,
    "norm_growth_limit": Kind("[1.0, inf)", (0.5,)),
    "ell_norm": Kind("(0.0, inf]", (0.0, -1.0), allow_inf=True),  # a p-norm order; inf is the max norm
    "state_free_scale": NONNEGATIVE,
    "projected_scale": NONNEGATIVE,
    "inactive_scale": NONNEGATIVE,
    "growth": Kind("[1.0, inf)", (0.5,)),
    # lion, moment scaling
    "smooth_beta": POSITIVE,
    "n_sma_threshold": Kind("[4.0, inf)", (3.0,)),
    # stability
    "threshold": NONNEGATIVE,
    "fraction": FRACTION,
    "threshold_scale": POSITIVE,
    "theta": BETA,
    "eta_min": FRACTION,
    "min_ratio": POSITIVE,
    "max_ratio": POSITIVE,
    "eta": NONNEGATIVE,
    # schedules and batch size
    "initial_accumulator_value": NONNEGATIVE,
    "nu": POSITIVE,
    "peak_value": NONNEGATIVE,
    "init_value": NONNEGATIVE,
    "end_value": NONNEGATIVE,
    "tau": FRACTION,
    "old_batch_size": POSITIVE,
    "new_batch_size": POSITIVE,
    # distributed
    "ratio": OPEN_FRACTION,
    "density": OPEN_FRACTION,  # SPAM's sparse-momentum share of each leaf
    "adam_b2": BETA,  # AGVM's use_adam preconditioner
    "world_size": int_at_least(1),
    # integers
    "seed": INT,
    "channel_axis": INT,
    "rank": int_at_least(1),
    "update_every": int_at_least(1),
    "update_interval": int_at_least(1),
    "n_probes": int_at_least(1),
    "num_grads": int_at_least(1),
    "max_tries": int_at_least(1),
    "num_samples": int_at_least(1),
    "num_active": int_at_least(1),
    "every": int_at_least(1),
    "block_size": int_at_least(1),
    "min_size": int_at_least(0),
    "reset_period": int_at_least(1),
    "period": int_at_least(1),
    "warmup_steps": int_at_least(0),
    "accumulation_steps": int_at_least(0),
    "total_steps": int_at_least(1),
    "initial_batch_size": int_at_least(1),
    "max_batch_size": int_at_least(1),
    "test_interval": int_at_least(1),
    "micro_batch_size": int_at_least(1),
    "interval": int_at_least(1),
    "start_step": int_at_least(0),
    "stop_step": int_at_least(0),
    "max_steps": int_at_least(1),
    "queue_size": int_at_least(1),
    "max_gap": int_at_least(1),
    "total_bits": int_at_least(2),
    "max_exponent_bits": int_at_least(1),
}

#: Factories that give an argument name another meaning (or another range, from their arithmetic).
OVERRIDES: dict[tuple[str, str], Kind] = {
    # ε where the denominator cannot reach 0 (see each module's comment at its check).
    **{(f, "eps"): NONNEGATIVE for f in ("lars", "scale_by_lars_trust_ratio", "regularized_newton",
                                          "scale_by_regularized_newton")},
    ("sophia_g", "rho"): POSITIVE,  # the official name of Sophia's γ
    ("frugal", "rho"): FRACTION,  # density of the state-full subspace
    ("scale_by_frugal", "rho"): FRACTION,
    ("add_gradient_noise", "gamma"): NONNEGATIVE,  # decay exponent of the noise variance (0: constant)
    **{(f, k): POSITIVE for f in ("adadagrad", "adadagrad_norm", "adaptive_batch_size") for k in ("eta", "theta")},
    ("compress_with_econtrol", "eta"): NONNEGATIVE,
    ("lowrank.AdaptiveRefresh", "threshold"): Kind("[-1.0, 1.0]", (-1.5, 1.5)),  # a cosine similarity
    ("refined_schedule", "total_steps"): int_at_least(2),
    # bounded below by another argument, at its value in the required arguments (initial_batch_size=2) or
    # its default (start_step=500)
    **{(f, "max_batch_size"): int_at_least(2) for f in ("adadagrad", "adadagrad_norm", "adaptive_batch_size")},
    ("scale_by_agvm", "stop_step"): int_at_least(500),
    ("spam", "threshold"): NONNEGATIVE,
    ("q_galore", "block_size"): Kind("even int >= 2", (1, 3), integer=True),
    ("lowrank.QuantizedProjector", "block_size"): Kind("even int >= 2", (1, 3), integer=True),
    ("q_galore", "bits"): Kind("one of (4, 8)", (5,), integer=True),
    ("lowrank.QuantizedProjector", "bits"): Kind("one of (4, 8)", (5,), integer=True),
    ("lowrank.quantized", "bits"): Kind("one of (4, 8)", (5,), integer=True),
    ("lowrank.quantized", "block_size"): Kind("even int >= 2", (1, 3), integer=True),
    ("quantize_state", "bits"): Kind("one of (8,)", (4,), integer=True),
    ("record_grad_norms", "ord"): Kind("one of (1, 2)", (-1, 3), integer=True),
}

#: Arguments that are no numbers: modes, flags, masks, axes, dtypes, callables, transformations, trees.
NOT_NUMERIC = frozenset({
    "absolute", "adaptive_refresh", "amsgrad", "axis_index_groups", "axis_name", "base", "bias_correction",
    "blocks", "buffer_dtype", "compressor", "correct_bias", "data_axis", "decay_sparse", "degenerated_to_sgd", "density_mask", "dimension_numbers",
    "distribution", "dtype", "eps_corrected", "estimate_at_start", "fields", "fixed_decay", "full_rank",
    "grad_norms", "hessian_diag", "inactive", "inner", "input_norms", "kappa_grad", "kind", "label_fn", "layer_groups",
    "mask", "method", "mode", "mu_dtype", "name", "nesterov", "normalization", "nu_dtype", "nu_field",
    "on_switch", "order", "orthogonal", "per_leaf", "probabilities", "projection_mask", "projector",
    "quantize", "quantize_mask", "radial", "rectify", "reference_label", "reset", "reset_count",
    "reset_magnitude", "rule", "scale_front", "scale_type", "shard_axis", "side", "signed", "spatial_average",
    "stacked", "stacked_kernels", "stagger", "state_free", "state_full", "stochastic_rounding",
    "stores_basis", "subspace", "test", "trust_ratio_mask", "unsigned_fields", "use_adam", "variant", "weight_decouple",
})

#: Flags among NOT_NUMERIC: a string ('False' is truthy) or an int is refused too.
FLAGS = frozenset({
    "absolute", "amsgrad", "correct_bias", "decay_sparse", "degenerated_to_sgd", "eps_corrected", "estimate_at_start",
    "fixed_decay", "nesterov", "orthogonal", "per_leaf", "quantize", "radial", "rectify", "reset",
    "reset_count", "reset_magnitude", "scale_front", "signed", "stagger", "stochastic_rounding",
    "stores_basis", "use_adam", "weight_decouple",
})


def _adam():
  return optax.scale_by_adam()


#: Exported factories that are not registered optimizers, with the arguments they cannot do without.
PIECES = {
    "adaptive_batch_size": lambda: dict(inner=_adam(), initial_batch_size=2, max_batch_size=64),
    "add_gradient_noise": dict,
    "clip_by_adaptive_max": dict,
    "clip_by_coordinate": dict,
    "clip_spikes": dict,
    "compress": lambda: dict(compressor=gradtx.top_k(0.5)),
    "compress_with_econtrol": lambda: dict(compressor=gradtx.top_k(0.5)),
    "compress_with_error_feedback": lambda: dict(compressor=gradtx.top_k(0.5)),
    "create_dynamic_map": dict,
    "estimate_hessian_diag_gnb": lambda: dict(seed=0),
    "estimate_hessian_diag_hutchinson": lambda: dict(seed=0),
    "just_one_byte": lambda: dict(learning_rate=0.1),
    "linear_decay": lambda: dict(peak_value=0.1, total_steps=10),
    "mezo": lambda: dict(learning_rate=0.1),
    "normalize_by_norm_ema": dict,
    "project_low_rank": lambda: dict(inner=_adam(), rank=2),
    "project_radial": lambda: dict(inner=_adam()),
    "quantize_state": lambda: dict(inner=_adam()),
    "random_k": lambda: dict(ratio=0.5),
    "record_grad_norms": lambda: dict(max_steps=10),
    "refined_schedule": lambda: dict(grad_norms=jnp.ones(8), peak_value=0.1),
    "rescale_learning_rate": lambda: dict(learning_rate=0.1, old_batch_size=32, new_batch_size=64, rule="sqrt"),
    "reset_state_every": lambda: dict(inner=_adam(), period=10),
    "scale_by_adagrad": dict,
    "scale_by_adagrad_norm": dict,
    "scale_by_adahessian": dict,
    "scale_by_adam_coordinate_clipped": dict,
    "scale_by_adamp": dict,
    "scale_by_agvm": lambda: dict(inner=_adam(), label_fn=lambda path, leaf: "a"),
    "scale_by_apollo": dict,
    "scale_by_belief": dict,
    "scale_by_diffgrad": dict,
    "scale_by_exadam": dict,
    "scale_by_frugal": dict,
    "scale_by_just_one_byte": dict,
    "scale_by_lamb_trust_ratio": dict,
    "scale_by_lars_trust_ratio": dict,
    "scale_by_lion": dict,
    "scale_by_mfac": dict,
    "scale_by_regularized_newton": dict,
    "scale_by_sgdp": dict,
    "scale_by_sophia": lambda: dict(hessian_diag=gradtx.estimate_hessian_diag_hutchinson(seed=0)),
    "scale_by_spam": dict,
    "scale_by_spsa": dict,
    "scale_by_stable_spam": dict,
    "scale_by_tract": dict,
    "scaled_sign": dict,
    "top_k": lambda: dict(ratio=0.5),
    # the low-rank family's public building blocks (gradtx.lowrank)
    "lowrank.AdaptiveRefresh": dict,
    "lowrank.DCTProjector": dict,
    "lowrank.QuantizedProjector": lambda: dict(base=lowrank.SVDProjector()),
    "lowrank.RandomProjector": dict,
    "lowrank.quantized": dict,
    "lowrank.sample_layers": lambda: dict(inner=_adam(), num_active=1),
    "lowrank.scale_by_adam_hf": dict,
}

#: Exported functions that are not factories: they compute on data (at trace time, inside `update`) or
#: inspect states and trees; their numeric arguments are the factories' above.
NOT_FACTORIES = frozenset({
    "check_replicas_agree", "conv_patches", "coordinate_norm_test", "dequantize_blockwise", "exclude_bias_and_norm",
    "fill_masked_leaves", "inner_product_test", "memory_report", "next_batch_size", "norm_test",
    "orthogonality_test", "quantize_blockwise", "recorded_grad_norms", "refined_schedule_values",
    "smooth_grad_norms", "spsa_direction", "state_nbytes", "state_shardings",
})


def _factory(name):
  if name in OPTIMIZERS:
    return OPTIMIZERS[name].factory
  if name.startswith("lowrank."):
    return getattr(lowrank, name.split(".", 1)[1])
  return getattr(gradtx, name)


def _required(name):
  if name in OPTIMIZERS:
    return dict(OPTIMIZERS[name].test_kwargs)
  return PIECES[name]()


FACTORIES = sorted(set(OPTIMIZERS) | set(PIECES))


def _kind(factory_name, arg):
  return OVERRIDES.get((factory_name, arg), ARGS.get(arg))


def _bad_values(kind: Kind):
  values = ["1e-8", (0.9, 0.999), math.nan]
  if not kind.allow_inf:
    values.append(math.inf)
  if kind.integer:
    values.append(2.5)
  return values + list(kind.out_of_range)


def test_every_exported_function_is_tabled():
  exported = {n for n in gradtx.__all__ if inspect.isfunction(getattr(gradtx, n))}
  unknown = exported - set(OPTIMIZERS) - set(PIECES) - NOT_FACTORIES
  assert not unknown, f"classify these exported functions in PIECES or NOT_FACTORIES: {sorted(unknown)}"


@pytest.mark.parametrize("name", FACTORIES)
def test_every_argument_is_classified(name):
  params = inspect.signature(_factory(name)).parameters
  unknown = [a for a in params if _kind(name, a) is None and a not in NOT_NUMERIC]
  assert not unknown, f"{name}: add these arguments to ARGS, OVERRIDES or NOT_NUMERIC: {unknown}"


def _message_problems(name, arg, value, error, kind_wording):
  msg = str(error)
  wanted = [f"`{arg}`", repr(value), kind_wording]
  missing = [w for w in wanted if w not in msg]
  return [f"{name}({arg}={value!r}): message {msg!r} lacks {missing}"] if missing else []


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_numbers_raise_at_construction_naming_argument_value_and_range(name):
  factory, required = _factory(name), _required(name)
  factory(**required)  # the baseline builds
  problems = []
  for arg in inspect.signature(factory).parameters:
    kind = _kind(name, arg)
    if kind is None:
      continue
    for value in _bad_values(kind):
      try:
        factory(**{**required, arg: value})
      except (ValueError, TypeError) as e:
        problems += _message_problems(name, arg, value, e, kind.allowed)
      else:
        problems.append(f"{name}({arg}={value!r}) was accepted")
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", FACTORIES)
def test_flags_must_be_booleans(name):
  factory, required = _factory(name), _required(name)
  problems = []
  for arg in inspect.signature(factory).parameters:
    if arg not in FLAGS:
      continue
    for value in ("False", 1):
      try:
        factory(**{**required, arg: value})
      except (ValueError, TypeError) as e:
        problems += _message_problems(name, arg, value, e, "True or False")
      else:
        problems.append(f"{name}({arg}={value!r}) was accepted")
  assert not problems, "\n".join(problems)


WITH_LEARNING_RATE = sorted(n for n in FACTORIES if "learning_rate" in inspect.signature(_factory(n)).parameters)


@pytest.mark.parametrize("name", WITH_LEARNING_RATE)
def test_learning_rate_schedules_and_zero_d_arrays_are_accepted(name):
  factory, required = _factory(name), _required(name)
  factory(**{**required, "learning_rate": optax.linear_schedule(0.1, 0.0, 10)})
  factory(**{**required, "learning_rate": jnp.asarray(0.1)})


#: Arguments bounded by another argument: (factory, arguments, the pair's names in the message).
PAIRS = [
    ("lamb", dict(learning_rate=0.1, phi_min=2.0, phi_max=1.0), ("`phi_max`", "phi_min")),
    ("scale_by_agvm", dict(min_ratio=3.0, max_ratio=2.0), ("`min_ratio`", "max_ratio")),
    ("linear_decay", dict(peak_value=0.1, total_steps=10, warmup_steps=10), ("`warmup_steps`", "total_steps")),
    ("adaptive_batch_size", dict(initial_batch_size=8, max_batch_size=4), ("`max_batch_size`", "8")),
    ("scale_by_agvm", dict(start_step=10, stop_step=5), ("`stop_step`", "10")),
]


@pytest.mark.parametrize("name, kwargs, wording", PAIRS, ids=[f"{p[0]}-{list(p[1])[-1]}" for p in PAIRS])
def test_arguments_bounded_by_another_argument(name, kwargs, wording):
  with pytest.raises(ValueError) as e:
    _factory(name)(**{**_required(name), **kwargs})
  assert all(w in str(e.value) for w in wording), str(e.value)
