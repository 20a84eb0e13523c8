"""The evaluate notebook's closing sentences and the paired comparison with the baselines, on
hand-made evaluation results (no model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from swiftlib.training.baselines import BaselineResult
from swiftlib.training.evaluate import EvalResult, compare_with_baselines, describe_evaluation


class _Cfg:
    label, task, num_classes = "sex", "classification", 2


class _Data:
    def __init__(self, root):
        self.store_paths = (str(root),)


def _result(tmp_path, p1, target, mechanism="connectivity"):
    gt = tmp_path / "ground_truth"
    gt.mkdir(exist_ok=True)
    labels = {"sex": {"mechanism": mechanism, "regions": ["sex_a", "sex_b"]}}
    (gt / "ground_truth.json").write_text(json.dumps({"labels": labels}))
    ids = [f"sub-{i:02d}" for i in range(len(p1))]
    preds = pd.DataFrame({"subject_id": ids, "p0": 1 - np.asarray(p1), "p1": p1, "target": target})
    from sklearn.metrics import roc_auc_score

    metrics = {"test/auroc": roc_auc_score(target, p1), "test/num_subjects": float(len(ids))}
    return EvalResult(metrics, preds, _Cfg(), _Data(tmp_path), "test")


def test_a_good_model_is_said_to_find_the_planted_signal(tmp_path):
    rng = np.random.default_rng(0)
    target = np.arange(24) % 2
    res = _result(
        tmp_path, np.clip(0.5 + 0.4 * (target - 0.5) + rng.normal(0, 0.1, 24), 0, 1), target
    )
    text = describe_evaluation(res)
    assert text.startswith("AUROC 1.00 on 24 unseen test subjects (chance 0.5; one-sided")
    assert "p < 0.001" in text and "the model found it" in text and "collapsed" not in text


def test_a_collapsed_model_is_named_and_compared(tmp_path):
    target = np.arange(6) % 2
    res = _result(tmp_path, np.full(6, 0.2999) + np.arange(6) * 1e-6, target)
    base_pred = pd.DataFrame(
        {
            "subject_id": res.predictions["subject_id"],
            "baseline": "connectivity",
            "target": target,
            "score": target * 0.8 + 0.1,
        }
    )
    base = BaselineResult(pd.DataFrame(), base_pred, "sex", "classification", "auroc")
    cmp = compare_with_baselines(res, base, num_bootstrap=200)
    row = cmp.iloc[0]
    assert row["score"] == 1.0 and row["verdict"] in ("loses", "tie") and row["ci_low"] < 0
    text = describe_evaluation(res, comparison=cmp)
    assert "no better than chance" in text and "has not found it" in text
    assert "collapsed to a constant" in text and "With 6 test subjects" in text
    assert "The transformer does not beat the connectivity baseline (AUROC" in text


def test_null_label_at_chance_is_the_right_answer(tmp_path):
    target = np.arange(20) % 2
    p1 = np.random.default_rng(1).uniform(size=20)
    text = describe_evaluation(_result(tmp_path, p1, target, mechanism="none"))
    assert "independent of the data by construction" in text and "collapsed" not in text
