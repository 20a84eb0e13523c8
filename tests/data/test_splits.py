"""Subject-level splits: counts, determinism, stratification, files, leakage, few-shot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from swiftlib.data.splits import (
    LeakageError,
    SplitError,
    Splits,
    check_leakage,
    few_shot_subset,
    load_or_create_splits,
    make_splits,
    subjects_of,
)

IDS = [f"sub-{i:03d}" for i in range(20)]


def test_counts_cover_and_disjoint():
    s = make_splits(IDS, (0.7, 0.15, 0.15), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (14, 3, 3)
    assert sorted(s.train + s.val + s.test) == IDS
    check_leakage(s)
    s2 = make_splits(list(reversed(IDS)), (0.7, 0.15, 0.15), seed=0)
    assert s2.as_dict() == s.as_dict()  # input order does not matter
    assert make_splits(IDS, seed=1).as_dict() != s.as_dict()
    odd = make_splits(IDS[:7], (0.5, 0.25, 0.25), seed=0)  # 3.5 / 1.75 / 1.75 -> largest remainder
    assert (len(odd.train), len(odd.val), len(odd.test)) == (3, 2, 2)
    assert s["val"] == s.val
    with pytest.raises(KeyError, match="expected one of"):
        s["dev"]


def test_stratified_balances_classes():
    labels = [i % 2 for i in range(20)]
    s = make_splits(IDS, (0.6, 0.2, 0.2), seed=3, stratify=labels)
    lab = dict(zip(IDS, labels, strict=True))
    for part, n in (("train", 12), ("val", 4), ("test", 4)):
        ids = s[part]
        assert len(ids) == n and sum(lab[i] for i in ids) == n // 2
    with_nan = make_splits(IDS[:4], (0.5, 0.5, 0.0), seed=0, stratify=[0, 1, np.nan, np.nan])
    assert len(with_nan.train) == 2 and len(with_nan.test) == 0


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.3), (0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]
)
def test_bad_fractions(fractions):
    with pytest.raises(SplitError, match="fractions="):
        make_splits(IDS, fractions)


def test_bad_inputs():
    with pytest.raises(SplitError, match=r"participant ids repeat: \['a'\]"):
        make_splits(["a", "a", "b"])
    with pytest.raises(SplitError, match="no participants"):
        make_splits([])
    with pytest.raises(SplitError, match="stratify has 2 values for 3"):
        make_splits(["a", "b", "c"], stratify=[0, 1])


def test_file_written_and_reused(tmp_path):
    s = load_or_create_splits(IDS, "UKB", "main", (0.7, 0.15, 0.15), seed=5, splits_dir=tmp_path)
    path = tmp_path / "UKB" / "main.json"
    assert s.path == str(path) and path.exists()
    saved = json.loads(path.read_text())
    assert saved["train"] == list(s.train) and saved["params"]["seed"] == 5
    again = load_or_create_splits(
        list(reversed(IDS)), "UKB", "main", (0.7, 0.15, 0.15), seed=5, splits_dir=tmp_path
    )
    assert again.as_dict() == s.as_dict()
    # a different seed would silently change the split: refused
    with pytest.raises(SplitError, match=r"seed: file has 5, requested 6.*overwrite=True"):
        load_or_create_splits(IDS, "UKB", "main", seed=6, splits_dir=tmp_path)
    with pytest.raises(SplitError, match=r"participants added: \['sub-new'\] \[1\]"):
        load_or_create_splits(IDS + ["sub-new"], "UKB", "main", seed=5, splits_dir=tmp_path)
    new = load_or_create_splits(IDS, "UKB", "main", seed=6, splits_dir=tmp_path, overwrite=True)
    assert json.loads(path.read_text())["params"]["seed"] == 6 and new.as_dict() != s.as_dict()


def test_stratified_file_records_label(tmp_path):
    labels = [i % 2 for i in range(20)]
    load_or_create_splits(
        IDS, "ABIDE", "dx", stratify=labels, stratify_label="asd", splits_dir=tmp_path
    )
    with pytest.raises(SplitError, match="stratify_label: file has 'asd', requested None"):
        load_or_create_splits(IDS, "ABIDE", "dx", splits_dir=tmp_path)


def test_leaking_file_is_refused(tmp_path):
    s = load_or_create_splits(IDS, "HCP", splits_dir=tmp_path)
    path = tmp_path / "HCP" / "default.json"
    d = json.loads(path.read_text())
    d["val"] = d["val"] + [s.train[0]]
    path.write_text(json.dumps(d))
    with pytest.raises(LeakageError, match=s.train[0]):
        load_or_create_splits(IDS, "HCP", splits_dir=tmp_path)


def test_check_leakage_names_subjects():
    check_leakage({"train": ["a", "b"], "val": ["c"], "test": []})
    with pytest.raises(LeakageError) as e:
        check_leakage({"train": ["a", "b", "x"], "val": ["b"], "test": ["x", "y"]})
    assert "train∩val: ['b']" in str(e.value) and "train∩test: ['x']" in str(e.value)
    with pytest.raises(LeakageError):
        check_leakage(Splits(("a",), ("a",), ()))


def test_few_shot_nested_and_errors():
    train = IDS[:15]
    s20 = few_shot_subset(train, 5, seed=1)
    s50 = few_shot_subset(train, 10, seed=1)
    assert len(s20) == 5 and len(s50) == 10 and set(s20) <= set(s50) <= set(train)
    assert few_shot_subset(list(reversed(train)), 5, seed=1) == s20  # deterministic
    assert few_shot_subset(train, 5, seed=2) != s20
    assert few_shot_subset(train, 15, seed=0) == sorted(train)
    with pytest.raises(SplitError, match="n=16 but the training split has only 15"):
        few_shot_subset(train, 16)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(SplitError, match="expected a positive integer"):
            few_shot_subset(train, bad)


def test_subjects_of_follows_participants(small_store):
    store, _ = small_store
    assert subjects_of(store, ["sub-0010"]) == ["sub-0010", "sub-0010_ses-2"]
    assert subjects_of(store, ["sub-0000", "nobody"]) == ["sub-0000"]
