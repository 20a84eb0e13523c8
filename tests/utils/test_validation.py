"""The one "did you mean" validator every user-facing refusal uses."""

import pytest

from swiftlib.utils.validation import check_choice, close_matches, did_you_mean


def test_close_names_are_suggested_and_far_ones_are_not():
    assert did_you_mean("bach_size", ["batch_size", "lr"]) == " (did you mean 'batch_size'?)"
    assert did_you_mean("zzz", ["batch_size", "lr"]) == ""
    assert (
        did_you_mean("sub-0001", ["sub-0011", "sub-0010", "x"], n=2)
        == " (did you mean 'sub-0011' or 'sub-0010'?)"
    )
    assert close_matches(3, [1, 2, 33]) == ["33"]  # non-strings compared as text


def test_check_choice_names_the_parameter_the_value_and_the_allowed_ones():
    assert check_choice("method", "ig", ["ig", "saliency"]) == "ig"
    with pytest.raises(
        ValueError,
        match=r"^method='saliancy': expected one of \['ig', 'saliency'\] "
        r"\(did you mean 'saliency'\?\)$",
    ):
        check_choice("method", "saliancy", ["ig", "saliency"])
