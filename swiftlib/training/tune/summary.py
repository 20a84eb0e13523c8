"""What a study found: :class:`StudySummary`, built from the study's storage; the best
trial's checkpoint is scored once on the test split (the result is cached in the study) and
the summary is written as ``trials.csv`` + ``results.json``."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import TrialState

from swiftlib.results import save_results
from swiftlib.training.tune.liveness import WORKER_ATTR, stale_reason_key

__all__ = ["StudySummary", "summarise", "test_metrics_key", "trial_states"]

log = logging.getLogger(__name__)

#: Trial states counted in ``results.json`` metrics (``tune/num_complete`` …).
COUNTED_STATES = ("COMPLETE", "PRUNED", "FAIL")
#: How many trials :meth:`StudySummary.best_trials` lists by default.
DEFAULT_TOP_K = 5


def test_metrics_key(number: int) -> str:
    """The study user attribute caching trial ``number``'s test metrics."""
    return f"test_metrics:trial-{number}"


def trial_states(study) -> dict:
    """Trial state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING) -> count."""
    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


@dataclass
class StudySummary:
    """What a study found. ``test_metrics`` are the best trial's checkpoint scored once on
    the test split (never used to choose); ``val_metrics`` its validation metrics."""

    study_name: str
    storage: str
    study_dir: Path
    monitor: str
    direction: str
    n_trials: int  # the study's target (complete + pruned)
    states: dict  # COMPLETE / PRUNED / FAIL / RUNNING / WAITING -> count
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    best_run_dir: Path | None = None
    best_checkpoint: str | None = None
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    results_path: Path | None = None
    study: Any = field(default=None, repr=False)

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: number, state, value, duration, params, worker, run dir, the
        epoch a pruned trial stopped at, and why a trial was failed as stale."""
        study_attrs = self.study.user_attrs
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            pruned = t.state == TrialState.PRUNED and t.intermediate_values
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "duration_s": t.duration.total_seconds() if t.duration else None,
                    **{f"params_{k}": v for k, v in t.params.items()},
                    "worker": t.user_attrs.get(WORKER_ATTR),
                    "run_dir": t.user_attrs.get("run_dir"),
                    "pruned_at_epoch": max(t.intermediate_values) if pruned else None,
                    "error": study_attrs.get(stale_reason_key(t.number)),
                }
            )
        return pd.DataFrame(rows)

    def best_trials(self, k: int = DEFAULT_TOP_K) -> pd.DataFrame:
        """The ``k`` best complete trials, best first."""
        df = self.trials_frame()
        if df.empty:
            return df
        df = df[df["state"] == "COMPLETE"].drop(columns="error")  # only failed trials have one
        ascending = self.direction == "minimize"
        return df.sort_values("value", ascending=ascending).head(k).reset_index(drop=True)

    @property
    def metrics(self) -> dict:
        """``results.json`` metrics: best trial's val/test metrics and trial counts."""
        out = {**self.val_metrics, **self.test_metrics}
        for state in COUNTED_STATES:
            out[f"tune/num_{state.lower()}"] = float(self.states.get(state, 0))
        if self.best_trial is not None:
            out["tune/best_trial"] = float(self.best_trial)
        return out


def _score_on_test(study, summary: StudySummary, best) -> None:
    """Score the best trial's checkpoint on the test split once; cache it in the study."""
    from swiftlib.training.evaluate import evaluate_checkpoint  # tests patch it there

    log.info(
        "scoring the best trial (%d, %s=%.4g) once on the test split",
        best.number,
        summary.monitor,
        best.value,
    )
    res = evaluate_checkpoint(summary.best_checkpoint, split="test")
    summary.test_metrics = {k: float(v) for k, v in res.metrics.items()}
    study.set_user_attr(test_metrics_key(best.number), summary.test_metrics)
    if summary.best_run_dir is not None:
        res.predictions.to_csv(summary.best_run_dir / "predictions_test.csv", index=False)


def _write(summary: StudySummary, parameters: dict) -> None:
    trials_csv = summary.study_dir / "trials.csv"
    summary.trials_frame().to_csv(trials_csv, index=False)
    summary.results_path = save_results(
        summary.study_dir,
        "tune",
        metrics=summary.metrics,
        parameters=parameters,
        artifacts={
            "best_checkpoint": summary.best_checkpoint,
            "best_run_dir": summary.best_run_dir,
            "trials": trials_csv,
        },
        extra={
            "monitor": summary.monitor,
            "direction": summary.direction,
            "study_name": summary.study_name,
            "storage": summary.storage,
            "best_params": summary.best_params,
            "states": summary.states,
        },
    )


def summarise(
    study,
    storage_desc: str,
    study_dir: Path,
    n_trials: int,
    evaluate_test: bool,
    parameters: dict | None = None,
    write: bool = True,
) -> StudySummary:
    """The :class:`StudySummary` of ``study``; ``evaluate_test`` scores the best trial on the
    test split unless that result is cached; ``write`` writes ``trials.csv`` and
    ``results.json`` into ``study_dir``."""
    monitor = study.user_attrs.get("monitor", "")
    summary = StudySummary(
        study.study_name,
        storage_desc,
        study_dir,
        monitor,
        study.direction.name.lower(),
        n_trials,
        trial_states(study),
        study=study,
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("study %s has no complete trial yet (%s)", study.study_name, summary.states)
    else:
        best = study.best_trial
        summary.best_trial, summary.best_value = best.number, best.value
        summary.best_params = dict(best.params)
        run_dir = best.user_attrs.get("run_dir")
        summary.best_run_dir = Path(run_dir) if run_dir else None
        summary.best_checkpoint = best.user_attrs.get("best_checkpoint")
        summary.val_metrics = dict(best.user_attrs.get("val_metrics") or {})
        cached = study.user_attrs.get(test_metrics_key(best.number))
        if cached is not None:
            summary.test_metrics = dict(cached)
        elif evaluate_test and summary.best_checkpoint:
            _score_on_test(study, summary, best)
    if write:
        _write(summary, parameters or {})
    return summary
