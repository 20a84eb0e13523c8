"""Dataset registry: one adapter per cohort, from its phenotype table to store columns.

Each adapter declares the phenotype table's subject-id and site columns and its labels
(name → :class:`LabelSpec`: task type, source column, number of classes, value mapping),
so training code never hard-codes a dataset. ``adapter.load_phenotype(path)`` reads a CSV
or TSV and returns the canonical table the store writer takes::

    subject_id  participant_id  dataset  site  <label 1>  <label 2> ...
    sub-1000011 sub-1000011     UKB      11025   1          62.0

Column names are the conventions of each cohort's public release as documented by the
data providers (UK Biobank showcase field ids, HCP S1200 unrestricted/restricted CSVs,
ABCD/NDA data structures, ABIDE I phenotypic file, BIDS ``participants.tsv``). Local copies
are often renamed: override any of them with ``adapter.with_columns(...)`` or register your
own adapter with :func:`register_dataset`. The generic ``custom`` adapter infers labels.

Example::

    from swiftlib.data import get_dataset
    abide = get_dataset("abide")
    table = abide.load_phenotype("Phenotypic_V1_0b_preprocessed1.csv")
    labels = abide.store_labels(table)   # -> StoreWriter.finalize(table, labels=labels)
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from swiftlib.utils.validation import close_matches

__all__ = [
    "LabelSpec",
    "DatasetAdapter",
    "CustomAdapter",
    "PhenotypeError",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "infer_label_specs",
]

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
_CANONICAL = ("subject_id", "participant_id", "dataset", "site")
_MAX_INFERRED_CLASSES = 10


class PhenotypeError(ValueError):
    """A phenotype table does not match what its dataset adapter declares."""


@dataclass(frozen=True)
class LabelSpec:
    """One prediction target of a dataset.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        column: the source column in the phenotype table.
        num_classes: number of classes (classification only).
        mapping: source value → label value (e.g. ABIDE ``DX_GROUP`` {1: 1, 2: 0}); values
            not in the mapping are an error, missing values stay missing (NaN).
        description: what the label means, in words.
    """

    task: Literal["classification", "regression"]
    column: str
    num_classes: int | None = None
    mapping: Mapping[Any, Any] | None = None
    description: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(
                f"LabelSpec(column={self.column!r}): task={self.task!r}; expected one of {TASKS}"
            )
        if self.task == "classification" and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(
                f"LabelSpec(column={self.column!r}): a classification label needs num_classes >= "
                f"2, got {self.num_classes}"
            )
        if self.task == "regression" and self.num_classes is not None:
            raise ValueError(
                f"LabelSpec(column={self.column!r}): num_classes is only for classification"
            )

    def to_store(self) -> dict:
        """The ``labels`` entry the store manifest keeps (``StoreWriter.finalize(labels=...)``)."""
        out: dict[str, Any] = {"task": self.task}
        if self.num_classes is not None:
            out["num_classes"] = int(self.num_classes)
        if self.description:
            out["description"] = self.description
        return out


def _read_table(path: Path):
    """Read a CSV/TSV: ``.tsv``/``.tab`` are tab-separated; otherwise the separator is sniffed."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"phenotype table {path} does not exist")
    if path.suffix.lower() in (".tsv", ".tab"):
        sep = "\t"
    else:
        with open(path, newline="") as f:
            head = f.read(64 * 1024)
        try:
            sep = csv.Sniffer().sniff(head, delimiters=",\t;").delimiter
        except csv.Error:
            sep = "\t" if head.count("\t") > head.count(",") else ","
    # Everything as text first: ids keep leading zeros; labels are converted per spec.
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True)


def _bids_id(values) -> Any:
    """``'1000011'`` → ``'sub-1000011'``; ids already starting with ``sub-`` are kept."""
    s = values.astype(str).str.strip()
    return s.where(s.str.startswith("sub-"), "sub-" + s)


def _numeric_key(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _apply_mapping(raw, mapping: Mapping, where: str):
    """Map text values through ``mapping`` (keys matched as text or as numbers)."""
    import pandas as pd

    by_text = {str(k).strip(): v for k, v in mapping.items()}
    by_num = {_numeric_key(k): v for k, v in mapping.items() if _numeric_key(k) is not None}
    out, bad = [], set()
    for v in raw:
        if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v):
            out.append(np.nan)
            continue
        t = str(v).strip()
        if t in by_text:
            out.append(by_text[t])
        elif _numeric_key(t) in by_num:
            out.append(by_num[_numeric_key(t)])
        else:
            bad.add(t)
            out.append(np.nan)
    if bad:
        raise PhenotypeError(
            f"{where}: values {sorted(bad)[:10]} are not in the declared mapping "
            f"{dict(mapping)}; fix the table or override the label's mapping"
        )
    return pd.to_numeric(pd.Series(out, index=raw.index), errors="coerce")


@dataclass(frozen=True)
class DatasetAdapter:
    """How one cohort's phenotype table and image layout map onto a swiftlib store.

    Attributes:
        name: registry name (matched case-insensitively).
        description: the cohort in a sentence.
        subject_column: the phenotype table's subject-id column.
        site_column: the acquisition-site column, or None for single-site cohorts (the
            canonical ``site`` is then the dataset name).
        labels: label name → :class:`LabelSpec`.
        image_pattern: glob of the cohort's preprocessed images (informational; used by
            ``swiftlib preprocess`` users to point at the right files).
    """

    name: str
    description: str
    subject_column: str
    site_column: str | None = None
    labels: Mapping[str, LabelSpec] = field(default_factory=dict)
    image_pattern: str = "sub-*/func/*_space-MNI152*_desc-preproc_bold.nii.gz"

    def with_columns(
        self,
        subject_column: str | None = None,
        site_column: str | None = None,
        **label_columns: str,
    ) -> DatasetAdapter:
        """A copy with renamed source columns, e.g. ``ukb.with_columns(age="age_at_scan")``."""
        unknown = [k for k in label_columns if k not in self.labels]
        if unknown:
            raise KeyError(
                f"{self.name}: no label(s) {unknown}; declared labels: {list(self.labels)}"
            )
        labels = {
            k: dataclasses.replace(v, column=label_columns.get(k, v.column))
            for k, v in self.labels.items()
        }
        return dataclasses.replace(
            self,
            subject_column=subject_column or self.subject_column,
            site_column=self.site_column if site_column is None else site_column,
            labels=labels,
        )

    # -- reading ---------------------------------------------------------------------------
    def load_phenotype(self, path, labels: list[str] | None = None):
        """Read the phenotype table at ``path`` into canonical columns.

        Returns a DataFrame with ``subject_id`` (text, ``sub-`` prefixed), ``participant_id``
        (= subject_id), ``dataset``, ``site`` and one column per label (mapping applied;
        missing values are NaN). ``labels`` restricts which declared labels are read.
        The store label declarations are in ``df.attrs["labels"]``.
        """
        path = Path(path)
        raw = _read_table(path)
        specs = self._select(labels)
        needed = [self.subject_column] + ([self.site_column] if self.site_column else [])
        needed += [s.column for s in specs.values()]
        missing = [c for c in dict.fromkeys(needed) if c not in raw.columns]
        if missing:
            raise PhenotypeError(
                f"{path}: column(s) {missing} required by dataset {self.name!r} are missing; "
                f"the table has columns {list(raw.columns)}. If your copy names them differently, "
                f"use get_dataset({self.name!r}).with_columns(...)"
            )
        return self._canonical(raw, specs, path)

    def _select(self, labels):
        if labels is None:
            return dict(self.labels)
        unknown = [k for k in labels if k not in self.labels]
        if unknown:
            raise KeyError(
                f"dataset {self.name!r} has no label(s) {unknown}; declared: {list(self.labels)}"
            )
        return {k: self.labels[k] for k in labels}

    def _canonical(self, raw, specs: Mapping[str, LabelSpec], path: Path):
        import pandas as pd

        ids = raw[self.subject_column]
        empty = ids.isna() | (ids.astype(str).str.strip() == "")
        if empty.any():
            raise PhenotypeError(
                f"{path}: {int(empty.sum())} row(s) have an empty {self.subject_column!r} "
                f"(first at row {int(np.flatnonzero(empty.to_numpy())[0]) + 2} of the file)"
            )
        out = pd.DataFrame({"subject_id": _bids_id(ids)})
        dup = out["subject_id"][out["subject_id"].duplicated()].unique().tolist()
        if dup:
            raise PhenotypeError(
                f"{path}: subject ids repeat in {self.subject_column!r}: {dup[:10]}"
                f"{' …' if len(dup) > 10 else ''} ({len(dup)} in all). Keep one row per subject "
                "(e.g. filter a longitudinal table to the imaging visit) before loading"
            )
        out["participant_id"] = out["subject_id"]
        out["dataset"] = self.name
        out["site"] = (
            raw[self.site_column].astype(str).str.strip() if self.site_column else self.name
        )
        for name, spec in specs.items():
            where = f"{path}: label {name!r} (column {spec.column!r})"
            if spec.mapping is not None:
                values = _apply_mapping(raw[spec.column], spec.mapping, where)
            else:
                values = pd.to_numeric(raw[spec.column].str.strip(), errors="coerce")
                bad = (values.isna() & raw[spec.column].notna()).to_numpy()
                if bad.any():
                    rows = np.flatnonzero(bad)
                    shown = ", ".join(
                        f"{out['subject_id'].iloc[i]} = {raw[spec.column].iloc[i]!r}"
                        for i in rows[:10]
                    )
                    raise PhenotypeError(
                        f"{where}: non-numeric values for {shown}"
                        f"{' …' if len(rows) > 10 else ''} ({len(rows)} in all); expected numbers "
                        "(an empty cell for a missing value)"
                    )
            if spec.task == "classification":
                ok = values.dropna()
                wrong = (
                    ok[(ok != np.round(ok)) | (ok < 0) | (ok >= spec.num_classes)].unique().tolist()
                )
                if wrong:
                    raise PhenotypeError(
                        f"{where}: classification values must be integers "
                        f"0..{spec.num_classes - 1}, found {wrong[:10]}"
                    )
            out[name] = values.to_numpy()
            n_missing = int(values.isna().sum())
            if n_missing:
                log.info("%s: %d of %d subjects have no value", where, n_missing, len(values))
        out.attrs["labels"] = {k: s.to_store() for k, s in specs.items()}
        return out.reset_index(drop=True)

    def store_labels(self, table=None) -> dict:
        """``{label: {"task": ..., "num_classes": ...}}`` for
        ``StoreWriter.finalize(labels=...)``."""
        if table is not None and "labels" in getattr(table, "attrs", {}):
            return dict(table.attrs["labels"])
        return {k: s.to_store() for k, s in self.labels.items()}


def infer_label_specs(raw, exclude=()) -> dict[str, LabelSpec]:
    """Guess label specs from a table of text columns (``custom`` datasets).

    Numeric columns with at most 10 distinct integer values → classification (values mapped
    in sorted order to 0..K-1), other numeric columns → regression, text → classification
    with sorted categories mapped to 0..K-1. Columns with fewer than two distinct values
    are skipped (logged).
    """
    import pandas as pd

    specs: dict[str, LabelSpec] = {}
    for col in raw.columns:
        if col in exclude:
            continue
        text = raw[col].dropna().astype(str).str.strip()
        text = text[text != ""]
        numeric = pd.to_numeric(text, errors="coerce")
        distinct = sorted(text.unique().tolist())
        if len(distinct) < 2:
            log.warning(
                "custom dataset: column %r has %d distinct value(s); not used as a label",
                col,
                len(distinct),
            )
            continue
        if numeric.notna().all():
            values = np.unique(numeric.to_numpy(dtype=float))
            if len(values) <= _MAX_INFERRED_CLASSES and np.all(values == np.round(values)):
                ints = [int(v) for v in values]
                mapping = (
                    None if ints == list(range(len(ints))) else {v: i for i, v in enumerate(ints)}
                )
                specs[col] = LabelSpec(
                    "classification",
                    col,
                    num_classes=len(ints),
                    mapping=mapping,
                    description=f"inferred: {len(ints)} integer classes {ints}",
                )
            else:
                specs[col] = LabelSpec("regression", col, description="inferred: numeric")
        else:
            mapping = {v: i for i, v in enumerate(distinct)}
            specs[col] = LabelSpec(
                "classification",
                col,
                num_classes=len(distinct),
                mapping=mapping,
                description=f"inferred: categories {distinct[:10]}",
            )
    return specs


@dataclass(frozen=True)
class CustomAdapter(DatasetAdapter):
    """Any BIDS-like table: ``participant_id`` (or ``subject_id``) + optional ``site`` + labels.

    Labels are inferred from the columns (see :func:`infer_label_specs`) unless declared.
    """

    id_candidates: tuple[str, ...] = ("participant_id", "subject_id")
    site_candidates: tuple[str, ...] = ("site", "site_id", "SITE_ID")

    def load_phenotype(self, path, labels: list[str] | None = None):
        path = Path(path)
        raw = _read_table(path)
        subject_column = next(
            (c for c in (self.subject_column, *self.id_candidates) if c and c in raw.columns), None
        )
        if subject_column is None:
            raise PhenotypeError(
                f"{path}: no subject-id column; expected one of {list(self.id_candidates)} (BIDS "
                "participants.tsv uses 'participant_id'); the table has columns "
                f"{list(raw.columns)}"
            )
        site_column = self.site_column or next(
            (c for c in self.site_candidates if c in raw.columns), None
        )
        exclude = {subject_column, site_column, *_CANONICAL}
        specs = dict(self.labels) or infer_label_specs(raw, exclude=exclude)
        if labels is not None:
            unknown = [k for k in labels if k not in specs]
            if unknown:
                raise KeyError(
                    f"{path}: no label column(s) {unknown}; usable labels: {list(specs)}"
                )
            specs = {k: specs[k] for k in labels}
        adapter = dataclasses.replace(
            self, subject_column=subject_column, site_column=site_column, labels=specs
        )
        return DatasetAdapter._canonical(adapter, raw, specs, path)


# -- the registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, DatasetAdapter] = {}


def register_dataset(adapter: DatasetAdapter, overwrite: bool = False) -> DatasetAdapter:
    """Add ``adapter`` to the registry (names are case-insensitive)."""
    if not isinstance(adapter, DatasetAdapter):
        raise TypeError(f"register_dataset expects a DatasetAdapter, got {type(adapter).__name__}")
    key = adapter.name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(
            f"dataset {adapter.name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[key] = adapter
    return adapter


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order."""
    return [a.name for a in _REGISTRY.values()]


def get_dataset(name: str | DatasetAdapter) -> DatasetAdapter:
    """The adapter registered as ``name`` (case-insensitive); adapters pass through."""
    if isinstance(name, DatasetAdapter):
        return name
    key = str(name).lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    near = close_matches(key, _REGISTRY, cutoff=0.5)  # case-insensitive: the keys are lower case
    hint = f" (did you mean {_REGISTRY[near[0]].name!r}?)" if near else ""
    raise KeyError(f"unknown dataset {name!r}{hint}; valid datasets: {', '.join(list_datasets())}")


def _cls(column, n=2, mapping=None, description=""):
    return LabelSpec(
        "classification", column, num_classes=n, mapping=mapping, description=description
    )


def _reg(column, description=""):
    return LabelSpec("regression", column, description=description)


_SEX_MF = {"M": 1, "F": 0}

for _adapter in (
    DatasetAdapter(
        name="UKB",
        description="UK Biobank imaging visit, resting-state fMRI (data field 20227, instance 2).",
        subject_column="eid",
        site_column="54-2.0",  # assessment centre at the imaging visit
        labels={
            "sex": _cls(
                "31-0.0", mapping={0: 0, 1: 1}, description="field 31: 0 = female, 1 = male"
            ),
            "age": _reg("21003-2.0", "field 21003: age (years) at the imaging visit"),
            "fluid_intelligence": _reg("20016-2.0", "field 20016: fluid intelligence score"),
        },
        image_pattern="*_20227_2_0/fMRI/rfMRI.ica/filtered_func_data_clean_MNI.nii.gz",
    ),
    DatasetAdapter(
        name="ABCD",
        description="Adolescent Brain Cognitive Development study (NDA release; baseline visit).",
        # NDA GUID, e.g. NDAR_INVXXXXXXXX (release 5 calls it src_subject_id)
        subject_column="subjectkey",
        site_column="site_id_l",
        labels={
            "sex": _cls("sex", mapping=_SEX_MF, description="NDA sex: M = 1, F = 0"),
            "age": _reg("interview_age", "age at interview, in months"),
            "intelligence": _reg(
                "nihtbx_totalcomp_uncorrected", "NIH Toolbox total composite (uncorrected)"
            ),
        },
        image_pattern="sub-*/ses-baselineYear1Arm1/func/*task-rest*_space-MNI152*_bold.nii.gz",
    ),
    DatasetAdapter(
        name="HCP",
        description=(
            "Human Connectome Project Young Adult S1200, resting-state fMRI (MNINonLinear)."
        ),
        subject_column="Subject",
        site_column=None,  # single site (WU-Minn)
        labels={
            "sex": _cls(
                "Gender", mapping=_SEX_MF, description="unrestricted 'Gender': M = 1, F = 0"
            ),
            "age": _reg(
                "Age_in_Yrs", "restricted table: age in years (the unrestricted 'Age' is binned)"
            ),
            "intelligence": _reg(
                "CogTotalComp_AgeAdj", "NIH Toolbox cognition total composite, age-adjusted"
            ),
            "fluid_intelligence": _reg(
                "PMAT24_A_CR", "Penn progressive matrices, correct responses"
            ),
        },
        image_pattern="*/MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR_hp2000_clean.nii.gz",
    ),
    DatasetAdapter(
        name="ABIDE",
        description=(
            "Autism Brain Imaging Data Exchange I (phenotypic file V1_0b, "
            "preprocessed-connectomes)."
        ),
        subject_column="SUB_ID",
        site_column="SITE_ID",
        labels={
            "asd": _cls(
                "DX_GROUP",
                mapping={1: 1, 2: 0},
                description="DX_GROUP: 1 = autism → 1, 2 = control → 0",
            ),
            "sex": _cls(
                "SEX", mapping={1: 1, 2: 0}, description="SEX: 1 = male → 1, 2 = female → 0"
            ),
            "age": _reg("AGE_AT_SCAN", "age at scan, years"),
            "fiq": _reg("FIQ", "full-scale IQ"),
        },
        image_pattern="*/func_preproc/*_func_preproc.nii.gz",
    ),
    DatasetAdapter(
        name="EMBARC",
        description=(
            "EMBARC antidepressant-response trial (sertraline vs placebo), BIDS participants table."
        ),
        subject_column="participant_id",
        site_column="site",
        labels={
            "sex": _cls("sex", mapping=_SEX_MF, description="M = 1, F = 0"),
            "age": _reg("age", "age in years"),
            "treatment": _cls(
                "stage1_treatment",
                mapping={"SER": 1, "PLA": 0},
                description="stage-1 arm: sertraline = 1, placebo = 0",
            ),
            "hamd_change": _reg("hamd_change", "change in HAM-D score over stage 1"),
            "responder": _cls("responder", description="stage-1 responder (1) or not (0)"),
        },
        image_pattern="sub-*/ses-1/func/*task-rest*_space-MNI152*_desc-preproc_bold.nii.gz",
    ),
    *(
        DatasetAdapter(
            name=task,
            description=f"BrainLM task-fMRI set {task} ({what}); BIDS participants table.",
            subject_column="participant_id",
            site_column=None,
            labels={
                "performance": _reg("performance", f"{task} task performance ({metric})"),
                "sex": _cls("sex", mapping=_SEX_MF, description="M = 1, F = 0"),
                "age": _reg("age", "age in years"),
            },
            image_pattern=f"sub-*/func/*task-{task}*_space-MNI152*_desc-preproc_bold.nii.gz",
        )
        for task, what, metric in (
            ("VSTM", "visual short-term memory", "capacity K"),
            ("gradCPT", "gradual-onset continuous performance task", "sensitivity d'"),
            ("MOT", "multiple object tracking", "accuracy"),
            ("ToPS", "task-based sustained attention set", "accuracy"),
        )
    ),
    DatasetAdapter(
        name="synthetic",
        description="swiftlib's synthetic cohort: BOLD-like signals with planted label effects.",
        subject_column="participant_id",  # its NIfTI export ships a BIDS participants.tsv
        site_column="site",
        labels={
            "sex": _cls(
                "sex", description="planted: connectivity difference between two named regions"
            ),
            "age": _reg("age", "planted: fluctuation amplitude of a named region"),
            "null_label": _cls("null_label", description="negative control: no signal"),
        },
        image_pattern="sub-*/func/sub-*_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
    ),
    CustomAdapter(
        name="custom",
        description="Any BIDS-like participants table; labels inferred from its columns.",
        subject_column="",
        site_column=None,
    ),
):
    register_dataset(_adapter)
del _adapter
