"""Dataset registry: names, adapters, phenotype loading, inference and errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from swiftlib.data.registry import (
    CustomAdapter,
    DatasetAdapter,
    LabelSpec,
    PhenotypeError,
    get_dataset,
    infer_label_specs,
    list_datasets,
    register_dataset,
)

ALL = [
    "UKB",
    "ABCD",
    "HCP",
    "ABIDE",
    "EMBARC",
    "VSTM",
    "gradCPT",
    "MOT",
    "ToPS",
    "synthetic",
    "custom",
]


def test_all_datasets_registered():
    names = list_datasets()
    for name in ALL:
        assert name in names
    for name in ALL:
        a = get_dataset(name.upper())
        assert a.name == name and a.description and a.image_pattern
        for spec in a.labels.values():
            assert spec.task in ("classification", "regression")


def test_declared_id_columns():
    assert get_dataset("ukb").subject_column == "eid"
    assert get_dataset("hcp").subject_column == "Subject"
    assert get_dataset("abcd").subject_column == "subjectkey"
    assert get_dataset("abide").subject_column == "SUB_ID"
    syn = get_dataset("synthetic")
    assert set(syn.labels) == {"sex", "age", "null_label"}
    assert syn.labels["sex"].num_classes == 2 and syn.labels["null_label"].num_classes == 2
    assert syn.labels["age"].task == "regression"


def test_unknown_dataset_did_you_mean():
    with pytest.raises(KeyError) as e:
        get_dataset("abdie")
    assert "did you mean 'ABIDE'" in str(e.value) and "UKB" in str(e.value)


def test_register_and_duplicates():
    a = DatasetAdapter(name="MyCohortXYZ", description="test", subject_column="id")
    register_dataset(a)
    assert get_dataset("mycohortxyz") is a and get_dataset(a) is a
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(dataclasses.replace(a))
    b = dataclasses.replace(a, description="replaced")
    register_dataset(b, overwrite=True)
    assert get_dataset("MyCohortXYZ").description == "replaced"
    with pytest.raises(TypeError, match="expects a DatasetAdapter"):
        register_dataset("UKB")


def test_labelspec_validation():
    with pytest.raises(ValueError, match="task='ordinal'"):
        LabelSpec("ordinal", "x")
    with pytest.raises(ValueError, match="num_classes >= 2"):
        LabelSpec("classification", "x")
    with pytest.raises(ValueError, match="only for classification"):
        LabelSpec("regression", "x", num_classes=3)
    assert LabelSpec("classification", "x", 3).to_store() == {
        "task": "classification",
        "num_classes": 3,
    }


def test_abide_mapping(tmp_path):
    p = tmp_path / "abide.csv"
    pd.DataFrame(
        {
            "SUB_ID": [50002, 50003, 50004],
            "SITE_ID": ["PITT", "PITT", "NYU"],
            "DX_GROUP": [1, 2, 1],
            "SEX": [1, 2, 2],
            "AGE_AT_SCAN": [16.8, 24.4, 19.1],
            "FIQ": [103, -9999, 110],
        }
    ).to_csv(p, index=False)
    df = get_dataset("ABIDE").load_phenotype(p)
    assert df["subject_id"].tolist() == ["sub-50002", "sub-50003", "sub-50004"]
    assert df["participant_id"].tolist() == df["subject_id"].tolist()
    assert df["site"].tolist() == ["PITT", "PITT", "NYU"] and set(df["dataset"]) == {"ABIDE"}
    assert df["asd"].tolist() == [1, 0, 1] and df["sex"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(df["age"], [16.8, 24.4, 19.1])
    assert df.attrs["labels"]["asd"] == {
        "task": "classification",
        "num_classes": 2,
        "description": get_dataset("ABIDE").labels["asd"].description,
    }


def test_ukb_tsv_keeps_ids_and_missing(tmp_path):
    p = tmp_path / "ukb.tsv"
    p.write_text(
        "eid\t31-0.0\t21003-2.0\t54-2.0\t20016-2.0\n"
        "1000011\t0\t62\t11025\t6\n0012345\t1\t\t11027\t\n"
    )
    df = get_dataset("UKB").load_phenotype(p)
    assert df["subject_id"].tolist() == ["sub-1000011", "sub-0012345"]  # leading zero kept
    assert df["sex"].tolist() == [0, 1] and df["site"].tolist() == ["11025", "11027"]
    assert df["age"].iloc[0] == 62 and np.isnan(df["age"].iloc[1])


def test_hcp_sniffed_and_single_site(tmp_path):
    p = tmp_path / "hcp.csv"
    p.write_text(
        "Subject;Gender;Age_in_Yrs;CogTotalComp_AgeAdj;PMAT24_A_CR\n"
        "100206;M;27;130.4;20\n100307;F;27;112.5;17\n"
    )
    df = get_dataset("hcp").load_phenotype(p, labels=["sex", "age"])
    assert list(df.columns) == ["subject_id", "participant_id", "dataset", "site", "sex", "age"]
    assert df["sex"].tolist() == [1, 0] and df["site"].tolist() == ["HCP", "HCP"]
    assert df.attrs["labels"].keys() == {"sex", "age"}


def test_already_prefixed_ids_unchanged(tmp_path):
    p = tmp_path / "s.csv"
    pd.DataFrame(
        {
            "participant_id": ["sub-01", "02"],
            "site": ["a", "b"],
            "sex": [0, 1],
            "age": [1.0, 2.0],
            "null_label": [1, 0],
        }
    ).to_csv(p, index=False)
    df = get_dataset("synthetic").load_phenotype(p)
    assert df["subject_id"].tolist() == ["sub-01", "sub-02"]


def test_missing_column_error_names_everything(tmp_path):
    p = tmp_path / "abide.csv"
    pd.DataFrame({"SUB_ID": [1], "SITE_ID": ["X"], "DX_GROUP": [1]}).to_csv(p, index=False)
    with pytest.raises(PhenotypeError) as e:
        get_dataset("ABIDE").load_phenotype(p)
    msg = str(e.value)
    assert str(p) in msg and "'SEX'" in msg and "'AGE_AT_SCAN'" in msg and "'FIQ'" in msg
    assert "['SUB_ID', 'SITE_ID', 'DX_GROUP']" in msg and "with_columns" in msg


def test_unmapped_value_error(tmp_path):
    p = tmp_path / "hcp.csv"
    p.write_text("Subject,Gender\n1,M\n2,X\n")
    with pytest.raises(PhenotypeError, match=r"values \['X'\] are not in the declared mapping"):
        get_dataset("HCP").load_phenotype(p, labels=["sex"])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Subject,Gender\n1,M\n1,F\n", "subject ids repeat"),
        ("Subject,Gender\n1,M\n,F\n", "row(s) have an empty 'Subject'"),
    ],
)
def test_bad_ids(tmp_path, text, fragment):
    p = tmp_path / "hcp.csv"
    p.write_text(text)
    with pytest.raises(PhenotypeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        get_dataset("HCP").load_phenotype(p, labels=["sex"])


def test_non_numeric_and_out_of_range(tmp_path):
    p = tmp_path / "syn.csv"
    pd.DataFrame(
        {
            "participant_id": ["a", "b"],
            "site": ["s", "s"],
            "sex": [0, 2],
            "age": [1, 2],
            "null_label": [0, 1],
        }
    ).to_csv(p, index=False)
    with pytest.raises(PhenotypeError, match=r"integers 0..1, found \[2"):
        get_dataset("synthetic").load_phenotype(p)
    pd.DataFrame(
        {
            "participant_id": ["a", "b"],
            "site": ["s", "s"],
            "sex": [0, 1],
            "age": ["old", 2],
            "null_label": [0, 1],
        }
    ).to_csv(p, index=False)
    # the column, the subject and the value are named
    with pytest.raises(
        PhenotypeError, match=r"label 'age' \(column 'age'\): non-numeric values for sub-a = 'old'"
    ):
        get_dataset("synthetic").load_phenotype(p)


def test_file_not_found_and_unknown_label(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        get_dataset("UKB").load_phenotype(tmp_path / "nope.csv")
    p = tmp_path / "x.csv"
    p.write_text("eid\n1\n")
    with pytest.raises(KeyError, match="no label"):
        get_dataset("UKB").load_phenotype(p, labels=["height"])


def test_with_columns(tmp_path):
    ukb = get_dataset("UKB").with_columns(
        subject_column="id", site_column="centre", age="age_at_scan"
    )
    assert ukb.subject_column == "id" and ukb.labels["age"].column == "age_at_scan"
    assert get_dataset("UKB").labels["age"].column == "21003-2.0"  # registry copy untouched
    p = tmp_path / "u.csv"
    p.write_text("id,centre,age_at_scan\n7,c1,50\n")
    assert ukb.load_phenotype(p, labels=["age"])["age"].tolist() == [50]
    with pytest.raises(KeyError, match="no label"):
        get_dataset("UKB").with_columns(height="h")


def test_custom_inference(tmp_path, caplog):
    p = tmp_path / "participants.tsv"
    pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02", "sub-03", "sub-04"],
            "site": ["A", "B", "A", "B"],
            "group": [1, 2, 2, 1],  # integers -> classification, mapped to 0..1
            "score": [0.5, 1.25, 2.0, 3.5],  # floats -> regression
            "handed": ["R", "L", "R", "A"],  # text -> classification, sorted categories
            "zero_based": [0, 1, 2, 1],  # 0..K-1 -> classification without mapping
            "many": list(range(4)),  # still <= 10 integer values
            "constant": [1, 1, 1, 1],  # skipped
        }
    ).to_csv(p, sep="\t", index=False)
    with caplog.at_level("WARNING"):
        df = get_dataset("custom").load_phenotype(p)
    assert "'constant'" in caplog.text
    labels = df.attrs["labels"]
    assert labels["group"]["task"] == "classification" and labels["group"]["num_classes"] == 2
    assert df["group"].tolist() == [0, 1, 1, 0]
    assert labels["score"] == {"task": "regression", "description": "inferred: numeric"}
    assert df["handed"].tolist() == [2, 1, 2, 0] and labels["handed"]["num_classes"] == 3
    assert df["zero_based"].tolist() == [0, 1, 2, 1] and labels["zero_based"]["num_classes"] == 3
    assert "constant" not in df.columns and df["site"].tolist() == ["A", "B", "A", "B"]
    assert set(df["dataset"]) == {"custom"}
    sub = get_dataset("custom").load_phenotype(p, labels=["score"])
    assert "group" not in sub.columns
    with pytest.raises(KeyError, match="usable labels"):
        get_dataset("custom").load_phenotype(p, labels=["height"])


def test_custom_many_integers_is_regression():
    raw = pd.DataFrame({"x": [str(v) for v in range(11)]})
    assert infer_label_specs(raw)["x"].task == "regression"


def test_custom_without_id_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,age\n1,3\n")
    with pytest.raises(PhenotypeError, match="participant_id"):
        get_dataset("custom").load_phenotype(p)
    assert isinstance(get_dataset("custom"), CustomAdapter)


def test_phenotype_to_store(tmp_path):
    """Adapter output feeds StoreWriter.finalize directly."""
    from swiftlib.data.geometry import StoreGeometry
    from swiftlib.data.store import StoreWriter

    p = tmp_path / "abide.csv"
    pd.DataFrame(
        {
            "SUB_ID": [1, 2],
            "SITE_ID": ["A", "B"],
            "DX_GROUP": [1, 2],
            "SEX": [1, 1],
            "AGE_AT_SCAN": [10.0, 11.0],
            "FIQ": [100, 101],
        }
    ).to_csv(p, index=False)
    adapter = get_dataset("ABIDE")
    table = adapter.load_phenotype(p)
    grid, aff = (3, 4, 5), np.eye(4)
    w = StoreWriter(tmp_path / "store", grid=grid, voxel_size=1.0, affine=aff)
    geom = StoreGeometry.build(grid, 1.0, aff, source_shape=grid, source_affine=aff)
    for sid in table["subject_id"]:
        w.write_subject(sid, np.zeros((*grid, 6), np.float16), np.ones(grid, bool), geom, 2.0, {})
    store = w.finalize(table, labels=adapter.store_labels(table))
    assert store.labels["asd"]["task"] == "classification" and store.datasets == ["ABIDE"]
    assert store.subjects.loc["sub-2", "asd"] == 0
