"""Writes tests/quantization/fixtures/dynamic_maps.npz: bitsandbytes' dynamic maps as PyTorch computes them.

bitsandbytes-foundation/bitsandbytes@95f9af30 ``functional.py::create_dynamic_map`` builds its maps in float32 with
``torch.linspace``; this script repeats that construction (transcribed, for 8 bits and 7 exponent bits) in
PyTorch so the test can compare gradtx's maps with the float32 values bitsandbytes actually uses.
Run it with an environment that has torch (e.g. ``pip install torch==2.13.0``):

    python tests/quantization/make_fixtures.py
"""

import pathlib

import numpy as np


def bnb_dynamic_map(signed: bool) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel  (the oracle is needed only when this runs)

  values = []
  for i in range(7):
    levels = 2**i if signed else 2 ** (i + 1)
    grid = torch.linspace(0.1, 1, levels + 1, dtype=torch.float32)
    means = (grid[:-1] + grid[1:]) / 2.0
    values += ((10 ** (i - 6)) * means).tolist()
    if signed:
      values += (-(10 ** (i - 6)) * means).tolist()
  values += [0.0, 1.0]
  assert len(values) == 256
  return np.asarray(torch.tensor(sorted(values), dtype=torch.float32).numpy())


if __name__ == "__main__":
  import torch  # pylint: disable=import-outside-toplevel

  out = pathlib.Path(__file__).parent / "fixtures" / "dynamic_maps.npz"
  np.savez(out, signed=bnb_dynamic_map(True), unsigned=bnb_dynamic_map(False), torch_version=torch.__version__)
  print(f"wrote {out}")
