"""Probes and site leakage on hand-made embedding tables (no model): the folds are the grouped
ones the docs promise, and they run without warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from swiftlib.interpret.probes import _cv_splitter, probe_scores, site_leakage


def _table(n=30, windows=1, seed=0):
    rng = np.random.default_rng(seed)
    sex = np.arange(n) % 2
    rows = []
    for i in range(n):
        for w in range(windows):
            rows.append(
                {
                    "subject_id": f"sub-{i:03d}",
                    "participant_id": f"sub-{i:03d}",
                    "site": f"site-{'ABC'[i % 3]}",
                    "sex": int(sex[i]),
                    "age": 50 + 10 * rng.normal(),
                    "window_start": w if windows > 1 else -1,
                }
            )
    df = pd.DataFrame(rows)
    for k in range(5):
        df[f"emb_{k}"] = rng.normal(size=len(df)) + (df["sex"] * 2.0 if k == 0 else 0)
    return df


@pytest.mark.parametrize("windows", [1, 3])
def test_probes_and_leakage_run_without_warnings(windows):
    df = _table(windows=windows)
    tasks = {"sex": "classification", "age": "regression"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "The groups parameter is ignored by StratifiedKFold"
        probes = probe_scores(df, labels=["sex", "age"], label_tasks=tasks, cv=3)
        leak = site_leakage(df, cv=3, num_permutations=3)
    assert probes.set_index(["label", "probe"]).loc[("sex", "linear"), "score"] > 0.9
    assert leak["num_sites"] == 3 and leak["p_value"] is not None


def test_folds_never_split_a_participant():
    df = _table(n=12, windows=4)
    y, groups = df["sex"].to_numpy(), df["participant_id"].to_numpy()
    splitter, k = _cv_splitter(y, groups, True, 5, 0)
    assert type(splitter).__name__ == "StratifiedGroupKFold"
    assert k == 5  # 6 participants per class: 5 folds possible (rows would have allowed 24)
    for train, test in splitter.split(np.zeros(len(y)), y, groups):
        assert not set(groups[train]) & set(groups[test])
    splitter, _ = _cv_splitter(df["age"].to_numpy(), groups, False, 3, 0)
    assert type(splitter).__name__ == "GroupKFold"
