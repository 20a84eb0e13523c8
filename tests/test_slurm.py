"""SLURM job scripts: syntax, rendering from the CLI, submission; and (``slurm`` marker) a
real single-node SLURM cluster on 127.0.0.1 running a rendered notebook job and a 2-task
``srun`` DDP job.

The real-cluster tests need root and Debian's ``slurmctld slurmd slurm-client munge``
(installed with apt-get when missing): ``make test-slurm``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from swiftlib.cli import main
from swiftlib.slurm import TEMPLATES, directives, render, template_for
from tests.conftest import notebook_errors, state_digest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "slurm").glob("*.sbatch"))
PRETRAIN = ROOT / "notebooks" / "02_pretrain" / "01_pretrain_simmim.ipynb"
FINETUNE = ROOT / "notebooks" / "03_downstream" / "01_finetune.ipynb"
MAKE = ROOT / "notebooks" / "01_data" / "01_make_synthetic_cohort.ipynb"
UKB = ROOT / "notebooks" / "params" / "perlmutter_ukb.yaml"


def _structure(text: str) -> list[str]:
    """Line skeleton: directives by option name, variable defaults by name, other lines verbatim."""
    out = []
    for line in text.splitlines():
        if m := re.match(r"^##?SBATCH (--[\w-]+)", line):
            out.append(f"SBATCH {m[1]}")
        elif m := re.match(r"^([A-Z_]+)=\$\{\1:-", line):
            out.append(f"VAR {m[1]}")
        else:
            out.append(line)
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_bash_n_and_carry_the_perlmutter_settings(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    d = directives(text)
    cpu = script.name == TEMPLATES["cpu"]
    assert d["--constraint"] == ("cpu" if cpu else "gpu")
    assert d["--signal"] == "SIGUSR1@90" and "--requeue" in d
    assert "##SBATCH --dependency=afterok:" in text  # --after JOBID activates it
    # account/QOS/time as variables
    assert "##SBATCH --account=" in text and "--qos" in d and "--time" in d
    assert "conda activate" in text and re.search(
        r"srun .*\\\n\s+swiftlib run \"\$NOTEBOOK\" -f \"\$PARAMS\" -o", text
    )
    if not cpu:
        assert d["--ntasks-per-node"] == d["--gpus-per-node"]  # one task per GPU


def test_template_follows_the_notebook_stage():
    assert template_for(PRETRAIN).name == TEMPLATES["pretrain"]
    assert template_for(FINETUNE).name == TEMPLATES["finetune"]
    assert template_for("notebooks/03_downstream/03_tune_optuna.ipynb").name == TEMPLATES["tune"]
    # no devices/num_nodes parameters: the one-task template
    assert template_for(MAKE).name == TEMPLATES["cpu"]
    assert template_for(ROOT / "notebooks/03_downstream/02_evaluate.ipynb").name == "cpu.sbatch"


def test_render_refuses_a_template_the_notebook_cannot_run(capsys):
    with pytest.raises(
        ValueError, match=r"sets notebook parameter\(s\) \['devices', 'num_nodes'\]"
    ):
        render(MAKE, template=ROOT / "slurm" / TEMPLATES["finetune"])
    rc = main(["slurm", "render", str(MAKE), "--template", "slurm/finetune.sbatch"])
    err = capsys.readouterr().err
    assert rc == 2 and "01_make_synthetic_cohort.ipynb does not have" in err
    assert "--template" in err and "cpu.sbatch" in err and len(err.strip().splitlines()) == 1
    # the data notebook renders into the CPU template, which passes no scale parameters
    script = render(MAKE)
    assert directives(script)["--constraint"] == "cpu" and "-p devices" not in script


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sbatch": {"account": "m1234\n#SBATCH --qos=premium"}},
        {"sbatch": {"job_name": "a\rb"}},
        {"variables": {"SWIFTLIB_ENV": "env\n rm -rf ~"}},
        {"run_dir": "/scratch/run\x00x"},
    ],
    ids=["account-newline", "job-name-cr", "env-newline", "run-dir-nul"],
)
def test_render_refuses_newlines_and_control_characters(kwargs):
    with pytest.raises(ValueError, match="newline or control character"):
        render(FINETUNE, **kwargs)


def test_render_refuses_an_unexpanded_variable_in_the_run_dir():
    with pytest.raises(ValueError, match=r"unexpanded variable \$SCRATCH"):
        render(FINETUNE, run_dir="$SCRATCH/runs/x")


def test_after_makes_the_job_wait_for_others(tmp_path, capsys):
    script = render(PRETRAIN, after=["123456", "789_2"])
    assert directives(script)["--dependency"] == "afterok:123456:789_2"
    assert "--dependency" not in directives(render(PRETRAIN))
    with pytest.raises(ValueError, match="expected SLURM job ids"):
        render(PRETRAIN, after=["12; rm"])
    # a chain: submit prints the bare job id with --parsable
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/bash\necho '4243;perlmutter'\n")
    fake.chmod(0o755)
    argv = ["slurm", "submit", str(FINETUNE), "-o", str(tmp_path / "ft"), "--sbatch", str(fake)]
    assert main([*argv, "--after", "4242", "--parsable"]) == 0
    assert capsys.readouterr().out == "4243\n"
    job = (tmp_path / "ft" / "job.sbatch").read_text()
    assert directives(job)["--dependency"] == "afterok:4242"


def _run_rendered(script_text: str, tmp_path: Path, has_resume: bool) -> list[str]:
    """Run a rendered job script with stand-ins for srun and swiftlib; the swiftlib run
    arguments it used."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
    )
    listed = "resume_from  str" if has_resume else "max_epochs  int"
    (bin_dir / "swiftlib").write_text(
        "#!/bin/bash\n"
        f'if [[ " $* " == *" --list-params "* ]]; then echo "  {listed}"; exit 0; fi\n'
        f'printf "%s\\n" "$@" > {tmp_path}/args\n'
    )
    for f in ("srun", "swiftlib"):
        (bin_dir / f).chmod(0o755)
    job = tmp_path / "job.sbatch"
    job.write_text(script_text)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "swiftlib-finetune",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NTASKS_PER_NODE": "4",
        "HOME": str(tmp_path),
    }
    subprocess.run(["bash", str(job)], env=env, check=True, capture_output=True)
    return (tmp_path / "args").read_text().splitlines()


@pytest.mark.parametrize("template", ["finetune", "pretrain"])
def test_a_rerun_after_a_crash_resumes_from_last_ckpt(template, tmp_path):
    """Not a pre-emption (those resume from hpc_ckpt_<n>.ckpt inside fit): a requeued,
    restarted or resubmitted job into the same RUN_DIR passes resume_from=last.ckpt."""
    run = tmp_path / "run"
    text = render(
        PRETRAIN if template == "pretrain" else FINETUNE,
        run_dir=run,
        variables={"SWIFTLIB_ENV": "", "SWIFTLIB_MODULES": ""},
    )
    first = _run_rendered(text, tmp_path, has_resume=True)
    assert "resume_from" not in first and first[:2] == [
        "run",
        str(FINETUNE if template == "finetune" else PRETRAIN),
    ]
    assert first[first.index("-p") : first.index("-p") + 2] == ["-p", "devices"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    again = _run_rendered(text, tmp_path, has_resume=True)
    i = again.index("resume_from")
    assert again[i - 1 : i + 2] == ["-p", "resume_from", str(run / "checkpoints" / "last.ckpt")]
    # a notebook without the parameter is not given it (the run would exit 2)
    assert "resume_from" not in _run_rendered(text, tmp_path, has_resume=False)


@pytest.mark.parametrize("notebook", [PRETRAIN, FINETUNE], ids=lambda p: p.stem)
def test_cli_render_keeps_the_template_structure_and_sets_values(notebook, capsys, tmp_path):
    assert (
        main(
            [
                "slurm",
                "render",
                str(notebook),
                "-f",
                str(UKB),
                "--nodes",
                "8",
                "--gpus-per-node",
                "2",
                "--time",
                "01:30:00",
                "--account",
                "m1234",
                "--qos",
                "",
                "-o",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    template = template_for(notebook).read_text()
    assert _structure(out) == _structure(template)
    d = directives(out)
    assert d["--nodes"] == "8" and d["--gpus-per-node"] == "2" and d["--ntasks-per-node"] == "2"
    # '' drops a directive
    assert d["--time"] == "01:30:00" and d["--account"] == "m1234" and "--qos" not in d
    assert (
        f"RUN_DIR=${{RUN_DIR:-{tmp_path / 'run'}}}" in out and f"PARAMS=${{PARAMS:-{UKB}}}" in out
    )
    script = tmp_path / "job.sbatch"
    script.write_text(out)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_render_without_options_is_the_template(capsys):
    assert main(["slurm", "render", "notebooks/02_pretrain/01_pretrain_simmim.ipynb"]) == 0
    assert capsys.readouterr().out == (ROOT / "slurm" / TEMPLATES["pretrain"]).read_text()


def test_render_refuses_bad_parameters_and_unknown_directives(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("01_pretrain_simmim:\n  max_epoch: 3\n")
    with pytest.raises(ValueError, match="unknown parameter 'max_epoch'"):
        render(PRETRAIN, bad)
    with pytest.raises(ValueError, match="has no #SBATCH --partition"):
        render(PRETRAIN, sbatch={"partition": "gpu"})


def test_submit_runs_sbatch_and_prints_job_id_and_run_dir(tmp_path, capsys):
    fake = tmp_path / "sbatch"
    fake.write_text('#!/bin/bash\necho "$@" > "$(dirname "$0")/args"\necho \'4242;perlmutter\'\n')
    fake.chmod(0o755)
    rc = main(
        [
            "slurm",
            "submit",
            str(FINETUNE),
            "-f",
            str(UKB),
            "-o",
            str(tmp_path / "run"),
            "--sbatch",
            str(fake),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "job id:  4242" in out and f"run dir: {tmp_path / 'run'}" in out
    script = (tmp_path / "run" / "job.sbatch").read_text()
    assert directives(script)["--output"] == str(tmp_path / "run" / "slurm-%j.out")
    assert f"NOTEBOOK=${{NOTEBOOK:-{FINETUNE}}}" in script
    assert (tmp_path / "args").read_text().split() == [
        "--parsable",
        str(tmp_path / "run" / "job.sbatch"),
    ]


def test_submit_without_sbatch_says_so(tmp_path, capsys):
    rc = main(
        [
            "slurm",
            "submit",
            str(FINETUNE),
            "-o",
            str(tmp_path / "r"),
            "--sbatch",
            str(tmp_path / "nope"),
        ]
    )
    assert rc == 1 and "not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# A real single-node SLURM cluster (marker: slurm)
# ---------------------------------------------------------------------------------------

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_installed():
    if all(
        shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "munged")
    ):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get as root is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        out = subprocess.run(install, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            pytest.skip(f"cannot install {' '.join(PACKAGES)}: {out.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def slurm_cluster():
    """``env`` for SLURM commands against a fresh cluster (munged + slurmctld + slurmd on
    127.0.0.1, state in a temporary folder); every daemon is stopped by its PID afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster runs its daemons as root")
    _ensure_installed()
    import pwd

    root = Path(tempfile.mkdtemp(prefix="swiftlib-slurm-"))
    root.chmod(0o755)  # munged wants every directory above its socket executable by all
    # cred_expire: a requeued job waits cred_expire + 1 s before it may start again (default 120);
    # sched_interval: the main scheduling loop that then starts it runs every 2 s (default 60)
    munge_dir = root / "munge"
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    munge = pwd.getpwnam("munge")
    os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
    munge_dir.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    mem_mb = int(open("/proc/meminfo").read().split()[1]) // 1024 // 2
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=swiftlibtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_dir}/munge.socket,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ReturnToService=2
MpiDefault=none
SchedulerParameters=sched_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        env.pop(var)  # a pytest started inside a SLURM job must not leak its job into ours
    daemons = []
    try:
        daemons.append(
            subprocess.Popen(
                [
                    "munged",
                    "-F",
                    f"--socket={munge_dir}/munge.socket",
                    f"--pid-file={munge_dir}/munged.pid",
                    f"--seed-file={munge_dir}/seed",
                    f"--log-file={munge_dir}/munged.log",
                ],
                user="munge",
                group="munge",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.time() + 10
        while not (munge_dir / "munge.socket").exists() and time.time() < deadline:
            time.sleep(0.05)
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            daemons.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        deadline = time.time() + 30
        state = ""
        while time.time() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10
            )
            state = out.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.2)
        if state != "idle":
            pytest.fail(
                f"local SLURM cluster did not come up (node state {state!r}); logs in {root}/log"
            )
        yield env
    finally:
        for p in reversed(daemons):
            p.terminate()
        for p in reversed(daemons):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_job(job_id: str, env: dict, timeout: float = 420) -> dict:
    """``scontrol show job`` fields once the job has finished (no accounting database here)."""
    deadline = time.time() + timeout
    fields: dict = {}
    while time.time() < deadline:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True
        )
        fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
        if fields.get("JobState") in (
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ):
            return fields
        time.sleep(1)
    pytest.fail(f"job {job_id} did not finish in {timeout} s: {fields.get('JobState')}")


LOCAL = [
    "--constraint",
    "",
    "--qos",
    "",
    "--gpus-per-node",
    "0",
    "--cpus-per-task",
    "1",
    "--time",
    "00:10:00",
    "--env",
    "",
    "--modules",
    "",
]


def _submit(args: list[str], env: dict, capsys) -> tuple[str, Path]:
    old = dict(os.environ)
    os.environ.update(env)
    try:
        rc = main(["slurm", "submit", *args])
    finally:
        os.environ.clear()
        os.environ.update(old)
    out = capsys.readouterr().out
    assert rc == 0, out
    job_id = re.search(r"job id:\s+(\d+)", out)[1]
    run_dir = Path(re.search(r"run dir:\s+(\S+)", out)[1])
    return job_id, run_dir


@pytest.mark.slurm
def test_rendered_notebook_job_completes_on_a_real_cluster(slurm_cluster, tmp_path, capsys):
    env = dict(slurm_cluster)  # the data notebook: the CPU template, no devices/num_nodes
    params = tmp_path / "params.yaml"
    params.write_text(
        f"01_make_synthetic_cohort:\n  num_subjects: 4\n  num_frames: 16\n  voxel_size: 8.0\n"
        f"  out_dir: {tmp_path / 'store'}\n  export_nifti_dir: ''\n"
    )
    job_id, run_dir = _submit(
        [
            str(MAKE),
            "-f",
            str(params),
            "-o",
            str(tmp_path / "run"),
            *LOCAL,
        ],
        env,
        capsys,
    )
    job = _wait_for_job(job_id, env)
    log = (
        (run_dir / f"slurm-{job_id}.out").read_text()
        if (run_dir / f"slurm-{job_id}.out").exists()
        else ""
    )
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", log[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "ok" and doc["metrics"]["data/num_subjects"] == 4
    assert (run_dir / "01_make_synthetic_cohort.ipynb").exists() and (
        run_dir / "01_make_synthetic_cohort.html"
    ).exists()


@pytest.mark.slurm
def test_two_task_srun_ddp_finetuning_job(slurm_cluster, tmp_path, capsys):
    """Two srun tasks, each a papermill kernel, form one Lightning DDP job (CPU, gloo).

    (Fine-tuning rather than SimMIM: plain DDP refuses SimMIM pretraining while the
    encoder's final norm takes no part in the SimMIM loss.)"""
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    store = make_synthetic_cohort(
        tmp_path / "store",
        config=SyntheticConfig(num_subjects=12, num_frames=24, voxel_size=8.0, seed=1),
        progress=False,
    )
    params = tmp_path / "params.yaml"
    params.write_text(
        f"01_finetune:\n  store_path: {store.root}\n  splits_dir: {tmp_path / 'splits'}\n  "
        "init_from: ''\n  model: swift_v2_test\n  model_overrides: {}\n  sequence_length: 8\n  "
        "windows_per_subject: 1\n  batch_size: 4\n  max_epochs: 1\n  accelerator: cpu\n  strategy: "
        "ddp\n"
    )
    job_id, run_dir = _submit(
        [
            str(FINETUNE),
            "-f",
            str(params),
            "-o",
            str(tmp_path / "run"),
            "--ntasks-per-node",
            "2",
            "--nodes",
            "1",
            *LOCAL,
        ],
        env=slurm_cluster,
        capsys=capsys,
    )
    job = _wait_for_job(job_id, slurm_cluster)
    log = (
        (run_dir / f"slurm-{job_id}.out").read_text()
        if (run_dir / f"slurm-{job_id}.out").exists()
        else ""
    )
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", log[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    assert (
        doc["status"] == "ok"
        and doc["parameters"]["devices"] == 2
        and doc["config"]["trainer"]["devices"] == 2
    )
    assert doc["config"]["data"]["num_devices"] == 2 and 0 <= doc["metrics"]["val/acc"] <= 1
    # rank 0 keeps the canonical notebook; rank 1 wrote its own under ranks/
    rank1 = run_dir / "ranks" / "rank-1" / "01_finetune.ipynb"
    assert (run_dir / "01_finetune.ipynb").exists() and rank1.exists()
    # Lightning: this kernel was the second of two DDP processes
    assert "MEMBER: 2/2" in rank1.read_text()


def _global_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slurm
def test_sigusr1_checkpoints_requeues_and_the_requeued_job_ends_as_an_uninterrupted_run(
    slurm_cluster, train_store, tmp_path, capsys, monkeypatch
):
    """``scancel --signal=USR1`` (what ``#SBATCH --signal=SIGUSR1@90`` sends: every process of the
    job's steps) mid-training: swiftlib saves ``RUN_DIR/hpc_ckpt_1.ckpt`` at the next step
    boundary and runs ``scontrol requeue``; SLURM restarts the same script, ``swiftlib run``
    reruns the notebook into the same run directory, Lightning resumes from ``hpc_ckpt_1.ckpt``
    and the run ends with the weights and metrics of an uninterrupted run with the same seed."""
    from swiftlib.runner import run_notebook

    params = {
        "store_path": str(train_store.root),
        "splits_dir": str(tmp_path / "splits"),
        "model": "swift_v2_test",
        "model_overrides": {"drop_path_rate": 0.1},
        "sequence_length": 8,
        "windows_per_subject": 0,
        "batch_size": 4,
        "max_epochs": 4,
        "accelerator": "cpu",
        "checkpoint_every_n_steps": 1,
    }
    steps = 4 * 6  # 4 epochs x (8 training subjects x 3 windows / batch 4)
    # JSON is YAML
    (tmp_path / "params.yaml").write_text(json.dumps({"01_pretrain_simmim": params}))
    env = {**slurm_cluster, "OMP_NUM_THREADS": "1"}
    job_id, run_dir = _submit(
        [
            str(PRETRAIN),
            "-f",
            str(tmp_path / "params.yaml"),
            "-o",
            str(tmp_path / "run"),
            "--ntasks-per-node",
            "1",
            "--nodes",
            "1",
            *LOCAL,
        ],
        env,
        capsys,
    )
    log_file = run_dir / f"slurm-{job_id}.out"

    deadline = time.time() + 180
    # training has begun (a checkpoint every step)
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert time.time() < deadline, (
            log_file.read_text()[-3000:] if log_file.exists() else "no job log"
        )
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)

    # the uninterrupted reference, same notebook and seed, outside SLURM (while the job is
    # requeued), with the job's thread count: another one changes the float reduction order (1e-7
    # differences)
    monkeypatch.setenv("OMP_NUM_THREADS", env["OMP_NUM_THREADS"])
    ref = run_notebook(
        PRETRAIN,
        run_dir=tmp_path / "reference",
        parameters=params,
        progress=False,
        log_output=False,
        html=False,
    )
    assert ref.status == "ok", ref.error

    job = _wait_for_job(job_id, env)
    log = log_file.read_text() if log_file.exists() else ""
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", log[-3000:]
    assert job["Restarts"] == "1", log[-3000:]  # requeued once, by swiftlib's scontrol requeue
    assert log.count("swiftlib pretrain: job") == 2  # the script ran twice (--open-mode=append)

    # the checkpoint the requeued job resumed from: Lightning's hpc_ckpt_<n>.ckpt, not last.ckpt
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved_at = _global_step(hpc)
    assert 0 < saved_at < steps, f"the signal came at step {saved_at} of {steps}: not mid-training"
    executed = run_dir / PRETRAIN.name
    assert notebook_errors(executed) == []  # the final attempt's notebook
    assert f"resumes from {hpc}" in executed.read_text()
    assert not list(run_dir.glob(".requeue-partial-*"))

    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "ok" and doc["error"] is None
    want = json.loads((tmp_path / "reference" / "results.json").read_text())["metrics"]
    for k, v in want.items():
        if k.startswith(("val/", "test/")):  # train/ are epoch means of the last attempt's steps
            assert doc["metrics"][k] == v, k
    for name in ("best.ckpt", "last.ckpt"):
        assert state_digest(run_dir / "checkpoints" / name) == state_digest(
            tmp_path / "reference" / "checkpoints" / name
        ), name
