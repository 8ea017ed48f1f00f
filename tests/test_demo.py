"""The demo runs end to end on tiny flags, passes extra arguments through nnx, and skips what it cannot feed."""

import json
import math

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx
from gradtx import demo, registry

TINY = ["--steps", "5", "--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "16",
        "--batch-size", "4", "--corpus-bytes", "20000", "--eval-every", "2", "--val-batches", "2", "--no-progress"]


def _needs(*names, seen=None):
  """A spec whose update requires ``names`` as extra arguments; appends ``(loss_fn(params), value)`` to seen."""

  def factory(learning_rate):
    def init(params):
      del params
      return optax.EmptyState()

    def update(updates, state, params=None, **extra):
      missing = [n for n in names if n not in extra]
      if missing:
        raise TypeError(f"update() missing required keyword-only argument(s) {missing}")
      if "loss_fn" in names:  # params -> the loss on the batch, the same value the step differentiated
        loss = extra["loss_fn"](params)
        assert jnp.shape(loss) == ()
        jax.debug.callback(lambda *pair: seen.append(pair), loss, extra["value"])
      if "logits_fn" in names:
        assert extra["logits_fn"](params).shape[-1] == 256
      return updates, state

    return optax.chain(optax.GradientTransformationExtraArgs(init, update),
                       optax.scale_by_learning_rate(learning_rate))

  return registry.OptimizerSpec(name=f"needs_{'_'.join(names)}", factory=factory,
                                test_kwargs={"learning_rate": 0.1}, family="test", paper="-", reference="-",
                                required_extra_args=names)


def test_demo_main_writes_table_plot_and_finite_losses(tmp_path, capsys, monkeypatch):
  seen = []
  spec = _needs("loss_fn", "logits_fn", "value", seen=seen)
  monkeypatch.setitem(registry._OPTIMIZERS, spec.name, spec)
  argv = ["--optimizers", f"lion,{spec.name}", "--lr", "lion=1e-3", "--out", str(tmp_path), *TINY]
  assert demo.main(argv) == 0
  out = capsys.readouterr().out
  assert "| lion | 0.001 (--lr) |" in out and f"| {spec.name} | 0.1 (registry test_kwargs) |" in out
  assert (tmp_path / "loss_curves.png").stat().st_size > 10_000
  assert "| lion |" in (tmp_path / "results.md").read_text()
  runs = json.loads((tmp_path / "results.json").read_text())["runs"]
  assert [r["name"] for r in runs] == ["lion", spec.name]
  for r in runs:
    assert r["status"] == "ok" and len(r["train_losses"]) == 5 and len(r["val_losses"]) == 3
    assert math.isfinite(r["final_train_loss"]) and math.isfinite(r["val_loss"]) and r["ms_per_step"] > 0
    assert r["train_losses"][-1] < r["train_losses"][0]
  # Lion keeps one f32 moment for the 11,536 params; each optimizer has int32 counts (Lion's, the schedule's).
  assert runs[0]["state_bytes"] == 4 * 11_536 + 4 + 4 and runs[1]["state_bytes"] == 4
  # The extra arguments reach the optimizer: loss_fn(params) and value are the loss the step differentiated.
  assert len(seen) == 5
  for (loss_at_params, value), train_loss in zip(seen, runs[1]["train_losses"]):
    assert float(loss_at_params) == pytest.approx(float(value), rel=1e-5) == pytest.approx(train_loss, rel=1e-5)


def test_demo_skips_optimizers_needing_arguments_it_cannot_provide(monkeypatch):
  spec = _needs("layer_inputs")
  monkeypatch.setitem(registry._OPTIMIZERS, spec.name, spec)
  runs, skipped = demo.plan_runs("all", {})
  assert spec.name not in [r.name for r in runs] and runs[0].name == demo.BASELINE
  mine = [m for m in skipped if "needs_layer_inputs" in m]
  assert len(mine) == 1 and "layer_inputs" in mine[0]
  provided = {"loss_fn", "logits_fn", "value"}
  expected = {n for n, s in registry.OPTIMIZERS.items() if set(s.required_extra_args) - provided}
  assert {m.split()[1].rstrip(":") for m in skipped} == expected


def test_demo_default_selection_follows_the_registry():
  runs, _ = demo.plan_runs("default", {})
  expected = [n for n, s in registry.OPTIMIZERS.items() if s.family in demo.DEFAULT_FAMILIES or n in demo.DEFAULT_EXTRA]
  assert [r.name for r in runs] == [demo.BASELINE, *expected]


@pytest.mark.parametrize("bad", ["lion", "lion=", "lion=-1", "lion=fast"])
def test_demo_rejects_bad_lr_flags(bad):
  with pytest.raises(ValueError, match="--lr"):
    demo.parse_lr_overrides([bad])


def test_demo_rejects_unknown_optimizers():
  with pytest.raises(ValueError, match="nope"):
    demo.plan_runs("lion,nope", {})


def test_default_demo_trains_a_low_rank_and_an_8bit_optimizer_beside_adamw():
  runs, _ = demo.plan_runs("default", {}, rank=24)
  names = [r.name for r in runs]
  assert names[0] == demo.BASELINE and "galore" in names and "adamw_8bit" in names
  galore = runs[names.index("galore")]
  assert galore.learning_rate == demo.DEMO_LEARNING_RATES["galore"]
  params = {"w": jax.ShapeDtypeStruct((96, 384), jnp.float32)}
  low_rank = gradtx.memory_report(galore.make(1e-2), params).state_bytes
  adamw = gradtx.memory_report(optax.adamw(1e-2), params).state_bytes
  # GaLore at rank 24 of a 96 x 384 kernel: the (96, 24) projector plus two (24, 384) moments.
  formula = 4 * (96 * 24 + 2 * 24 * 384)
  assert 0 < low_rank - formula < 64  # step counts, the PRNG key and the refresh counters
  assert low_rank < adamw / 2


def test_demo_rejects_a_negative_rank():
  with pytest.raises(SystemExit, match="--rank"):
    demo.main(["--rank", "-1", "--no-progress"])
