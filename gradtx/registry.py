"""The one table of gradtx's full optimizers.

Tests (``tests/conformance``), benchmarks, notebooks and the demo enumerate :data:`OPTIMIZERS` instead of
special-casing names: registering a new optimizer here (with :func:`register`, next to its factory) is what
puts it under the contract suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """How to build, test and cite one full optimizer.

  Attributes:
    name: registry key, the name of the factory in the flat ``gradtx`` namespace.
    factory: ``(**kwargs) -> optax.GradientTransformationExtraArgs``.
    test_kwargs: arguments under which the optimizer converges on the small contract problems.
    family: the folder of ``gradtx`` the method lives in.
    paper: title, authors, year and arXiv link.
    reference: the implementation the method was checked against (repo@commit, file).
    required_extra_args: names of keyword arguments ``update`` cannot work without (e.g. ``('loss_fn',)``).
    static_args: argument names that ``optax.inject_hyperparams`` must treat as static (flags, modes,
      structural ints, callables).
    state_per_param: human-readable state size, for the README table (e.g. ``"1 (m)"``).
    elementwise: True when the update is elementwise per parameter (step-time benchmark group).
    optax_counterpart: optional ``(factory, kwargs)`` of the closest optax optimizer, benchmarked beside it.
    data_axis_arg: the factory keyword that names the data-parallel axis, for optimizers whose update uses
      per-device data besides the (already averaged) gradient: extra arguments such as ``loss_fn``,
      ``value`` or ``per_example_grads`` computed on each device's micro-batch. Given the axis, the
      estimates made from them are averaged across it, so a ``pmap`` / ``shard_map`` data-parallel step
      equals the single-device full-batch step. ``None``: the update depends on the data only through the
      gradient (pmean the gradients and nothing else is needed).
    shard_axis_arg: the factory keyword that names the axis across which every param leaf is split (FSDP
      inside ``shard_map``), for optimizers with statistics over elements (norms, thresholds, maxima):
      given it, partial sums are combined across the axis. ``None``: the update is elementwise.
    rank_arg: the factory keyword that sets the size of a low-rank subspace, for optimizers whose rank is a
      free size choice that tools scale with the model (the demo, the benchmarks, the notebooks). ``None``:
      no such size, or a rank that is part of the method (APOLLO-Mini's rank 1).
  """

  name: str
  factory: Callable[..., optax.GradientTransformationExtraArgs]
  test_kwargs: Mapping[str, Any]
  family: str
  paper: str
  reference: str
  required_extra_args: tuple[str, ...] = ()
  static_args: tuple[str, ...] = ()
  state_per_param: str = ""
  elementwise: bool = True
  optax_counterpart: tuple[Callable[..., optax.GradientTransformation], Mapping[str, Any]] | None = None
  data_axis_arg: str | None = None
  shard_axis_arg: str | None = None
  rank_arg: str | None = None

  def build(self, **overrides: Any) -> optax.GradientTransformationExtraArgs:
    """The optimizer under ``test_kwargs`` updated with ``overrides``."""
    return self.factory(**{**self.test_kwargs, **overrides})


_OPTIMIZERS: dict[str, OptimizerSpec] = {}

#: Read-only view of every registered optimizer, by name.
OPTIMIZERS: Mapping[str, OptimizerSpec] = MappingProxyType(_OPTIMIZERS)


def register(spec: OptimizerSpec) -> OptimizerSpec:
  """Adds ``spec`` to :data:`OPTIMIZERS`; a second spec under the same name is a ``ValueError``."""
  if spec.name in _OPTIMIZERS and _OPTIMIZERS[spec.name] is not spec:
    raise ValueError(f"`name` {spec.name!r} is already registered; names must be unique.")
  if "learning_rate" not in spec.test_kwargs:
    raise ValueError(f"`test_kwargs` of {spec.name!r} must set learning_rate, got {dict(spec.test_kwargs)!r}.")
  _OPTIMIZERS[spec.name] = spec
  return spec


def get(name: str) -> OptimizerSpec:
  """The spec registered under ``name``; a ``ValueError`` lists the registered names otherwise."""
  try:
    return _OPTIMIZERS[name]
  except KeyError:
    raise ValueError(f"`name` must be one of {sorted(_OPTIMIZERS)!r}, got {name!r}.") from None


def markdown_table() -> str:
  """The README's table of full optimizers (name, family, paper, reference, state per parameter)."""
  rows = [
      "| optimizer | family | paper | checked against | state per parameter | extra args |",
      "|---|---|---|---|---|---|",
  ]
  for name in sorted(_OPTIMIZERS, key=lambda n: (_OPTIMIZERS[n].family, n)):
    s = _OPTIMIZERS[name]
    extra = ", ".join(f"`{a}`" for a in s.required_extra_args) or "–"
    rows.append(f"| `{name}` | {s.family} | {s.paper} | {s.reference} | {s.state_per_param} | {extra} |")
  return "\n".join(rows)


_START, _END = "<!-- registry-table:start -->", "<!-- registry-table:end -->"


def update_readme(path: str) -> None:
  """Rewrites the table between the registry-table markers of the README at ``path``."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  head, rest = text.split(_START, 1)
  tail = rest.split(_END, 1)[1]
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"{head}{_START}\n{markdown_table()}\n{_END}{tail}")

