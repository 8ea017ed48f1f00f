"""The dynamic maps against bitsandbytes' published construction (functional.py::create_dynamic_map)."""

import pathlib

import numpy as np
import pytest

from gradtx.quantization import maps

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "dynamic_maps.npz"


def published_map(signed, max_exponent_bits=7, total_bits=8):
  """bitsandbytes >= 0.42 construction, transcribed in float64 Python."""
  non_sign_bits = total_bits - 1
  data = []
  for i in range(max_exponent_bits):
    n = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
    bounds = np.linspace(0.1, 1.0, n)
    means = (bounds[:-1] + bounds[1:]) / 2.0
    scale = 10.0 ** (-(max_exponent_bits - 1) + i)
    data += list(scale * means)
    if signed:
      data += list(-scale * means)
  additional = 2 ** (non_sign_bits - max_exponent_bits) - 1
  if additional > 0:
    bounds = np.linspace(0.1, 1.0, additional + 1)
    means = (bounds[:-1] + bounds[1:]) / 2.0
    data += list(means)
    if signed:
      data += list(-means)
  data += [0.0, 1.0]
  return np.sort(np.array(data))


def pre_042_unsigned_length(max_exponent_bits=7, total_bits=8):
  """Entries of bitsandbytes 0.36-0.41's unsigned map (non_sign_bits = total_bits, doubled extras)."""
  non_sign_bits = total_bits
  additional = 2 * (2 ** (non_sign_bits - max_exponent_bits) - 1)
  count = 2
  for i in range(max_exponent_bits):
    count += 2 ** (i + non_sign_bits - max_exponent_bits + 1)
    count += additional  # added inside the loop in those versions
  return count


@pytest.mark.parametrize("signed", [True, False])
def test_length_sorted_and_endpoints(signed):
  m = maps.create_dynamic_map(signed=signed)
  assert m.shape == (256,) and m.dtype == np.float32
  assert np.all(np.diff(m) > 0)
  assert m[-1] == 1.0 and np.sum(m == 0.0) == 1
  if signed:
    assert m[127] == 0.0 and np.sum(m < 0) == 127 and np.sum(m > 0) == 128
    assert m[0] == np.float32(-0.99296875)
  else:
    assert m[0] == 0.0 and np.all(m >= 0)


@pytest.mark.parametrize("signed", [True, False])
def test_values_match_published_construction(signed):
  ref = published_map(signed)
  assert ref.shape == (256,)
  np.testing.assert_array_equal(maps.create_dynamic_map(signed=signed), ref.astype(np.float32))


@pytest.mark.parametrize("signed", [True, False])
def test_values_within_two_ulps_of_bitsandbytes_float32_tables(signed):
  bnb = np.load(FIXTURE)["signed" if signed else "unsigned"]
  ours = maps.create_dynamic_map(signed=signed)
  assert bnb.shape == (256,)
  assert np.all(np.sign(ours) == np.sign(bnb))
  ulps = np.abs(ours.view(np.int32).astype(np.int64) - bnb.view(np.int32).astype(np.int64))
  assert ulps.max() <= 2  # PyTorch's float32 linspace rounds differently; never by more than 2 ulps
  assert np.max(np.abs(ours - bnb) / np.maximum(np.abs(bnb), 1e-30)) < 1.5e-7


@pytest.mark.parametrize(
    "signed, per_decade", [(True, [1, 2, 4, 8, 16, 32, 64]), (False, [2, 4, 8, 16, 32, 64, 128])]
)
def test_codes_per_decade(signed, per_decade):
  m = maps.create_dynamic_map(signed=signed)
  pos = m[(m > 0) & (m < 1)]
  decades = np.floor(np.log10(pos)).astype(int)
  counts = [int(np.sum(decades == d)) for d in range(-7, 0)]
  assert counts == per_decade


def test_smallest_magnitudes():
  assert maps.signed_map()[128] == np.float32(5.5e-7)
  assert maps.unsigned_map()[1] == np.float32(3.25e-7)


def test_historical_unsigned_map_had_524_entries():
  assert pre_042_unsigned_length() == 524
  assert maps.create_dynamic_map(signed=False).shape == (256,)


@pytest.mark.parametrize("total_bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_other_widths_match_published_construction(total_bits, signed):
  m = maps.create_dynamic_map(signed, total_bits - 1, total_bits)
  np.testing.assert_array_equal(m, published_map(signed, total_bits - 1, total_bits).astype(np.float32))


@pytest.mark.parametrize("max_exponent_bits", [3, 5, 6])
def test_signed_map_with_fewer_exponent_bits_matches(max_exponent_bits):
  ref = published_map(True, max_exponent_bits)
  assert ref.shape == (256,)
  np.testing.assert_array_equal(maps.create_dynamic_map(True, max_exponent_bits), ref.astype(np.float32))


def test_maps_are_read_only():
  with pytest.raises(ValueError):
    maps.signed_map()[0] = 0.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"total_bits": 1}, "total_bits"),
        ({"total_bits": 8.0}, "total_bits"),
        ({"max_exponent_bits": 0}, "max_exponent_bits"),
        ({"max_exponent_bits": 8}, "max_exponent_bits"),
        ({"signed": False, "max_exponent_bits": 6}, "max_exponent_bits"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    maps.create_dynamic_map(**kwargs)
