"""benchmarks/convergence.py: a tiny run end to end, and the summary's arithmetic on made-up runs."""

import math
import pathlib
import sys

import pytest

import gradtx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import convergence  # noqa: E402


@pytest.mark.slow  # runs a benchmark script end to end (10-20 s of CPU); make test-slow
def test_tiny_run_reports_every_chosen_optimizer(tmp_path):
  assert convergence.main(["--size", "tiny", "--tasks", "digits", "--optimizers", "lion", "--lr-multipliers",
                           "0.5,2", "--out", str(tmp_path), "--no-progress"]) == 0
  text = (tmp_path / "convergence.md").read_text()
  assert "| `optax.adamw` | optax |" in text and "| `lion` | sign_momentum |" in text
  assert "best val accuracy" in text and "(convergence_digits.png)" in text
  assert (tmp_path / "convergence_digits.png").stat().st_size > 10_000


def test_plan_skips_what_the_loop_cannot_provide_and_names_lr_sources():
  names, skipped, centres = convergence.plan("all", ["digits"])
  assert names[0] == convergence.BASELINE
  for name, spec in gradtx.OPTIMIZERS.items():
    provided = set(spec.required_extra_args) <= set(convergence.PROVIDED_EXTRA_ARGS)
    assert (name in names) == provided and any(s.startswith(f"{name}:") for s in skipped) != provided
  for name in names:
    source = "table" if name in convergence.CENTRE_LR["digits"] else "registry test_kwargs"
    assert centres["digits"][name][1] == source
  with pytest.raises(ValueError, match="unknown optimizer"):
    convergence.plan("lion,not_an_optimizer", ["digits"])


def _run(name, lr, seed, losses, val_losses):
  run = convergence.Run(name, "digits", lr, seed, train_losses=list(losses))
  run.evals = [(i, {"val_loss": v}) for i, v in enumerate(val_losses)]
  return run


def test_summary_picks_the_lr_with_the_lowest_mean_best_val_loss_and_counts_steps_to_adamw():
  adamw = [_run(convergence.BASELINE, 1.0, s, [4, 3, 2, 1], [3.0, 2.0, 1.5, 1.0, 1.2]) for s in (0, 1)]
  fast = [_run("lion", lr, 0, [4, 1], [2.0, v]) for lr, v in ((0.1, 1.1), (0.3, 0.9), (1.0, 2.0))]
  diverged = [_run("spam", 1.0, 0, [1.0, math.nan], [])]
  rows = {r["name"]: r for r in convergence.summarize(adamw + fast + diverged, "digits",
                                                      [convergence.BASELINE, "lion", "spam"])}
  assert rows[convergence.BASELINE]["final"] == 1.0 and rows[convergence.BASELINE]["steps_to_adamw"] == "3"
  assert rows["lion"]["lr"] == 0.3 and not rows["lion"]["edge"] and rows["lion"]["val_loss"] == 0.9
  assert rows["lion"]["steps_to_adamw"] == "1"
  assert rows["spam"]["val_loss"] == math.inf and rows["spam"]["steps_to_adamw"].startswith("not reached (0/1")
