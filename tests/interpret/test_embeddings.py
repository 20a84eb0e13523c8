"""Embeddings: table shape and columns, levels, stages, resume, splits, diagnostics, adapter,
bad input (unknown subjects, broken contract, not a checkpoint)."""

import numpy as np
import pandas as pd
import pytest
import torch

from swiftlib.interpret.embeddings import (
    EmbeddingAdapter,
    diagnostics_metrics,
    embedding_columns,
    extract_embeddings,
    load_embeddings,
    probe_scores,
    resolve_split,
    site_leakage,
)
from swiftlib.tasks.common import CheckpointError, ContractError


@pytest.fixture(scope="module")
def window_table(age_run, interp_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "windows.parquet"
    return extract_embeddings(
        age_run.best_checkpoint,
        interp_store,
        split="all",
        level="window",
        stages=[0],
        out_path=out,
        batch_size=6,
        progress=False,
    ), out


def test_window_table_is_tidy_and_written(window_table, interp_store):
    df, out = window_table
    n_sub = len(interp_store.subject_ids)
    assert len(df) == n_sub * 3  # 24 frames / 8-frame windows
    front = [
        "subject_id",
        "participant_id",
        "dataset",
        "site",
        "sex",
        "age",
        "null_label",
        "window_start",
    ]
    assert list(df.columns[: len(front)]) == front
    assert len(embedding_columns(df)) == 24  # swift_v2_test: 12 * 2 features after one merge
    assert len(embedding_columns(df, "s0")) == 12  # stage 0 pooled
    assert df.groupby("subject_id")["window_start"].apply(list).iloc[0] == [0, 8, 16]
    assert np.isfinite(df[embedding_columns(df)].to_numpy()).all()
    back = load_embeddings(out)
    pd.testing.assert_frame_equal(
        back.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False
    )


def test_subject_level_is_the_mean_of_windows_and_matches_the_adapter(
    window_table, age_run, interp_store
):
    wins, _ = window_table
    sids = interp_store.subject_ids[:3]
    subj = extract_embeddings(
        age_run.best_checkpoint, interp_store, subjects=sids, level="subject", progress=False
    )
    assert list(subj["subject_id"]) == sids and (subj["num_windows"] == 3).all()
    cols = embedding_columns(subj)
    mine = wins[wins.subject_id.isin(sids)]
    want = mine.groupby("subject_id", sort=False)[cols].mean().loc[sids].to_numpy()
    np.testing.assert_allclose(subj[cols].to_numpy(), want, rtol=1e-5, atol=1e-6)
    adapter = EmbeddingAdapter.from_checkpoint(age_run.best_checkpoint, device="cpu", batch_size=2)
    assert adapter.input_shape == (1, 20, 24, 28, 8) and adapter.num_features == 24
    x = np.stack([interp_store.read_window(sids[0], s, 8) for s in (0, 8, 16)])  # (3, D, H, W, T)
    x = x.astype(np.float32)
    z = adapter.embed(x)  # channel axis added
    assert z.shape == (3, 24) and z.dtype == torch.float32
    np.testing.assert_allclose(z.mean(0).numpy(), subj[cols].to_numpy()[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 20, 24, 28, 8\)"):
        adapter.embed(torch.zeros(1, 1, 20, 24, 22, 8))


def test_resume_skips_finished_chunks_and_refuses_other_arguments(
    age_run, interp_store, tmp_path, caplog
):
    out = tmp_path / "e.parquet"
    sids = interp_store.subject_ids[:4]
    first = extract_embeddings(
        age_run.best_checkpoint,
        interp_store,
        subjects=sids[:2],
        out_path=out,
        chunk_subjects=1,
        progress=False,
    )
    assert len(list((tmp_path / "e.parquet.parts").glob("part-*.parquet"))) == 2
    with caplog.at_level("INFO"):
        full = extract_embeddings(
            age_run.best_checkpoint,
            interp_store,
            subjects=sids,
            out_path=out,
            chunk_subjects=1,
            progress=False,
        )
    assert "resuming: 2 of 4 subjects already embedded" in caplog.text
    assert list(full["subject_id"]) == sids
    pd.testing.assert_frame_equal(full.iloc[:2].reset_index(drop=True), first, check_dtype=False)
    with pytest.raises(ValueError, match="chunks of an extraction with other arguments"):
        extract_embeddings(
            age_run.best_checkpoint,
            interp_store,
            subjects=sids,
            out_path=out,
            level="window",
            progress=False,
        )


def test_split_comes_from_the_run_and_pretrain_checkpoints_embed(
    age_run, pretrain_ckpt, interp_store
):
    test_ids = resolve_split(interp_store, "test", checkpoint=age_run.best_checkpoint)
    assert 0 < len(test_ids) < len(interp_store.subject_ids)
    df = extract_embeddings(
        pretrain_ckpt, interp_store, split="test", splits_file=_split_file(age_run), progress=False
    )
    assert list(df["subject_id"]) == test_ids and len(embedding_columns(df)) == 24


def _split_file(run):
    import yaml

    data = yaml.safe_load((run.run_dir / "config.yaml").read_text())["data"]
    return f"{data['splits_dir']}/synthetic/{data['split_name']}.json"


def test_probe_and_site_leakage_numbers(window_table):
    df, _ = window_table
    subj = df.groupby("subject_id", sort=False).first().reset_index()
    rng = np.random.default_rng(0)
    # a planted 'site' direction: the leakage check must find it; a label copy is perfectly probed
    fake = subj.copy()
    fake["site"] = np.where(np.arange(len(fake)) % 2, "site-A", "site-B")
    fake["emb_0"] = (fake["site"] == "site-A") * 5.0 + rng.normal(0, 0.1, len(fake))
    fake["copy"] = (fake["site"] == "site-A").astype(int)
    leak = site_leakage(fake, num_permutations=9)
    assert leak["balanced_acc"] > 0.9 and leak["chance"] == 0.5 and leak["p_value"] <= 0.1 + 1e-9
    probes = probe_scores(
        fake, labels=["copy", "age"], label_tasks={"copy": "classification", "age": "regression"}
    )
    assert set(probes["probe"]) == {"linear", "knn"} and len(probes) == 4
    assert probes.set_index(["label", "probe"]).loc[("copy", "linear"), "score"] > 0.95
    assert set(probes[probes.label == "age"]["metric"]) == {"r2"}
    m = diagnostics_metrics(probes, leak, split="all")
    assert m["all/copy_linear_auroc"] > 0.95
    assert "all/site_balanced_acc" in m and "all/site_p_value" in m
    # window-level table: folds group windows by participant (no leakage across folds)
    wprobe = probe_scores(df, labels=["age"], label_tasks={"age": "regression"})
    assert (wprobe["num_rows"] == len(df)).all()
    # the store's label declarations travel in the table attrs
    assert set(probe_scores(df)["label"]) == {"sex", "age", "null_label"}


def test_bad_input_is_named(age_run, interp_store, synth_store, tmp_path):
    ckpt = age_run.best_checkpoint
    with pytest.raises(ValueError, match=r"not in store .*\['sub-9999'\]"):
        extract_embeddings(ckpt, interp_store, subjects=["sub-0001", "sub-9999"], progress=False)
    with pytest.raises(ContractError, match=r"grid: checkpoint expects \[20, 24, 28\]"):
        extract_embeddings(ckpt, synth_store, split="all", progress=False)
    with pytest.raises(ValueError, match="exactly one of split"):
        extract_embeddings(ckpt, interp_store, progress=False)
    with pytest.raises(ValueError, match="level='voxel'"):
        extract_embeddings(ckpt, interp_store, split="all", level="voxel", progress=False)
    with pytest.raises(ValueError, match="precision='fp16'"):
        extract_embeddings(ckpt, interp_store, split="all", precision="fp16", progress=False)
    with pytest.raises(ValueError, match="split='dev'"):
        resolve_split(interp_store, "dev")
    with pytest.raises(FileNotFoundError, match="pass splits_file= or subjects="):
        resolve_split(interp_store, "test", splits_file=tmp_path / "none.json")
    not_ckpt = tmp_path / "x.ckpt"
    not_ckpt.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable weights-only"):
        extract_embeddings(not_ckpt, interp_store, split="all", progress=False)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="no 'swiftlib' metadata"):
        extract_embeddings(bare, interp_store, split="all", progress=False)
    with pytest.raises(FileNotFoundError, match="run extract_embeddings"):
        load_embeddings(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="no embedding columns 'zz_0'"):
        embedding_columns(pd.DataFrame({"a": [1]}), "zz")


def test_cli_embed_writes_parquet_and_reports_errors(age_run, interp_store, tmp_path, capsys):
    import json

    from swiftlib.cli import main

    out = tmp_path / "cli.parquet"
    rc = main(
        [
            "embed",
            str(age_run.best_checkpoint),
            str(interp_store.root),
            "--out",
            str(out),
            "--split",
            "all",
            "--diagnostics",
            "-q",
        ]
    )
    assert rc == 0 and out.exists()
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(interp_store.subject_ids)
    assert "all/age_linear_r2" in summary["metrics"]
    rc = main(
        [
            "embed",
            str(age_run.best_checkpoint),
            str(interp_store.root),
            "--out",
            str(tmp_path / "x.parquet"),
            "--subjects",
            "sub-0404",
            "-q",
        ]
    )
    assert rc == 2 and "not in store" in capsys.readouterr().err


def test_subject_level_from_windows_and_split_column(window_table, age_run, interp_store):
    from swiftlib.interpret.embeddings import split_column, to_subject_level

    wins, _ = window_table
    subj = to_subject_level(wins)
    assert len(subj) == len(interp_store.subject_ids) and (subj["num_windows"] == 3).all()
    cols = embedding_columns(subj)
    first = wins[wins.subject_id == subj.subject_id[0]][cols].mean().to_numpy()
    np.testing.assert_allclose(subj[cols].to_numpy()[0], first, rtol=1e-6)
    assert to_subject_level(subj).equals(subj)
    tagged = split_column(subj, interp_store, checkpoint=age_run.best_checkpoint)
    assert set(tagged["split"]) == {"train", "val", "test"}
