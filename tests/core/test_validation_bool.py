"""core.validation.check_bool (appended by the low-rank family): flags must be real booleans."""

import pytest

from gradtx.core import validation


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_non_booleans_are_refused_with_the_name(value):
  with pytest.raises(ValueError, match="`flag` must be True or False"):
    validation.check_bool("flag", value)


def test_booleans_pass():
  validation.check_bool("flag", True)
  validation.check_bool("flag", False)
