"""Numbers rounded to what they can mean (the shared formatting helpers)."""

import math

import pandas as pd
import pytest

from swiftlib.interpret.probes import describe_site_leakage
from swiftlib.viz.text import format_number, format_p_value, format_score, round_table


def test_p_values_read_as_people_write_them():
    assert format_p_value(0.047619047619047616) == "p = 0.048"
    assert format_p_value(0.5) == "p = 0.50"
    assert format_p_value(0.00002) == "p < 0.001"
    assert format_p_value(1 / 21, num_permutations=20) == (
        "p ≤ 0.048 (the smallest possible with 20 permutations)"
    )
    assert format_p_value(3 / 21, num_permutations=20) == "p = 0.14"
    assert format_p_value(None) == "p = n/a" and format_p_value(math.nan) == "p = n/a"
    with pytest.raises(ValueError, match="p-value 1.5: expected a number in \\[0, 1\\]"):
        format_p_value(1.5)


def test_numbers_and_scores():
    assert format_number(0.047619) == "0.048"
    assert format_number(123.456, 3) == "123"
    assert format_number(-2.5e-5) == "-2.5e-05"
    assert format_number(float("nan")) == "n/a"
    assert format_score(0.9583333) == "0.96" and format_score(None) == "n/a"
    t = round_table(pd.DataFrame({"a": [0.123456], "n": [3]}), 2)
    assert t["a"][0] == 0.12 and t["n"][0] == 3


def test_site_leakage_sentence_is_rounded():
    leak = {"balanced_acc": 0.78125, "chance": 1 / 3, "p_value": 1 / 21, "num_permutations": 20}
    text = describe_site_leakage(leak)
    assert "0.047619" not in text and "0.78 vs chance 0.33" in text
    assert "predictable" in text and "smallest possible with 20 permutations" in text
    weak = describe_site_leakage({**leak, "balanced_acc": 0.4, "p_value": 0.6})
    assert weak.startswith("Site is not detectably predictable") and "p = 0.60" in weak
