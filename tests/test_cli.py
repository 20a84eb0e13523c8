import json
import subprocess
import sys

import pytest

from swiftlib.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("synth", "preprocess", "info", "demo"):
        assert cmd in out
    parser = build_parser()
    assert parser.parse_args(["synth", "out"]).subjects == 40
    # SwiFT default
    assert parser.parse_args(["preprocess", "in", "--out", "s"]).grid == [96, 96, 96]
    assert parser.parse_args(["info", "x"]).verify == "size"
    assert parser.parse_args(["demo"]).out.name == "demo"


def test_synth_then_info(tmp_path, capsys):
    rc = main(
        [
            "synth",
            str(tmp_path / "s"),
            "--subjects",
            "4",
            "--voxel-size",
            "8",
            "--grid",
            "20",
            "24",
            "22",
            "--frames",
            "24",
            "--seed",
            "5",
            "-q",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["subjects"] == 4
        and summary["grid"] == [20, 24, 22]
        and summary["frames_min_max"] == [24, 24]
    )
    assert main(["info", str(tmp_path / "s"), "--verify", "checksum"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "store" and set(info["labels"]) == {"sex", "age", "null_label"}


def test_preprocess_cli_exit_codes(tmp_path, synth_cohort, capsys):
    _, export, cfg = synth_cohort
    args = [
        "preprocess",
        str(export),
        "--out",
        str(tmp_path / "p"),
        "--voxel-size",
        "8",
        "--grid",
        "20",
        "24",
        "22",
        "--dataset",
        "synthetic",
        "--phenotype",
        str(export / "participants.tsv"),
        "-q",
    ]
    assert main(args) == 0
    assert "written 4, skipped (already done) 0, failed 0" in capsys.readouterr().out
    (tmp_path / "bad.nii.gz").write_text("nope")
    assert (
        main(["preprocess", str(tmp_path / "bad.nii.gz"), "--out", str(tmp_path / "q"), "-q"]) == 1
    )
    err = capsys.readouterr().err
    assert "FAILED bad" in err and "not a readable NIfTI image" in err


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "swiftlib info: error:" in capsys.readouterr().err
    assert (
        main(["preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--dataset", "UKBB"]) == 2
    )
    err = capsys.readouterr().err
    assert "no 4D NIfTI images found" in err or "UKBB" in err
    assert main(["synth", str(tmp_path / "x"), "--subjects", "2"]) == 2
    assert "num_subjects=2" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "swiftlib.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("swiftlib ")


def test_info_on_a_checkpoint_is_one_screen_and_full_has_everything(train_store, tmp_path, capsys):
    from swiftlib.training import fit
    from tests.conftest import tiny_fit_config

    res = fit(tiny_fit_config(train_store, tmp_path / "run"))
    capsys.readouterr()
    assert main(["info", res.best_checkpoint]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 50 and "rng" not in out
    doc = json.loads(out)
    assert doc["model"] == "swift_v2_test" and doc["checkpoint_kind"] == "finetune"
    assert doc["task"] == {"task": "classification", "label": "sex", "num_classes": 2}
    assert doc["contract"]["normalisation"] == train_store.manifest["normalisation"]
    assert doc["epoch"] == 0 and doc["global_step"] > 0 and "val/auroc" in doc["best_score"]
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["run"]["status"] == "ok"
    assert doc["run"]["metrics"]["test/loss"] == pytest.approx(run["metrics"]["test/loss"])
    assert '"grid": [' in out  # short lists on one line
    assert doc["full"].startswith("swiftlib info --full ")
    assert main(["info", "--full", res.best_checkpoint]) == 0
    full = json.loads(capsys.readouterr().out)
    assert "rng" in full["swiftlib"] and full["hyper_parameters"]["config"]["label"] == "sex"
