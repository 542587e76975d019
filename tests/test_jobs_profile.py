"""Cluster profiles: every bad key, type or value is rejected at load time with its dotted path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import profile
from jobs.profile import ProfileError
from tests.helpers import REPO


def write(tmp_path: Path, raw: object, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def base(**sections: object) -> dict:
    raw: dict = {"name": "t", "executor": "slurm"}
    raw.update(sections)
    return raw


def test_shipped_profiles_load() -> None:
    local = profile.load("local")
    assert local.executor == "local" and not local.uses_container
    ci = profile.load("ci")
    assert ci.executor == "slurm" and ci.slurm.partition == "debug" and ci.uses_container
    assert ci.slurm.cpus_per_task <= 2 and ci.slurm.gpus_per_node == 0
    genius = profile.load(REPO / "configs/clusters/genius.yaml")
    assert genius.uses_gpus and genius.container.nv and genius.image.min_driver
    assert genius.source.endswith("genius.yaml")


def test_profile_found_by_name_through_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, base(slurm={"partition": "gpu"}), "mycluster.yaml")
    monkeypatch.setenv(profile.PROFILE_DIR_ENV, str(tmp_path))
    assert profile.load("mycluster").slurm.partition == "gpu"


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"'nosuch': not found .*known profiles: .*ci.*genius.*local"):
        profile.load("nosuch")


def test_the_template_is_not_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not offered where known profiles are listed, and refused by name with what to do instead.
    with pytest.raises(ProfileError) as info:
        profile.load("nosuch")
    assert "TEMPLATE" not in str(info.value).split("known profiles:")[1]
    for name in ("TEMPLATE", "template"):
        with pytest.raises(ProfileError, match=r"is the template for new cluster profiles, not a cluster: copy "
                           r"configs/clusters/TEMPLATE.yaml to configs/clusters/NAME.yaml"):
            profile.load(name)
    # The same from the command line, before anything else happens.
    proc = subprocess.run([sys.executable, "-m", "jobs", "submit", "--config", "configs/demo.yaml", "--cluster",
                           "TEMPLATE", "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "TEMPLATE" in proc.stderr and "not a cluster" in proc.stderr, proc.stderr
    assert "preflight" not in proc.stdout


def test_missing_profile_path() -> None:
    with pytest.raises(ProfileError, match="no such file"):
        profile.load("/nonexistent/x.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (base(slurm={"tiem_min": 5}), r"slurm.tiem_min: unknown key \(did you mean slurm.time_min\?\)"),
        (base(slurmm={}), r"slurmm: unknown key \(did you mean slurm\?\)"),
        (base(slurm={"time_min": "5"}), "slurm.time_min: expected an integer"),
        (base(slurm={"mem_gb": "lots"}), "slurm.mem_gb: expected a number"),
        (base(slurm={"setup": "module load x"}), "slurm.setup: expected a list"),
        (base(slurm={"setup": [3]}), r"slurm.setup\[0\]: expected a string"),
        (base(slurm={"additional": ["x"]}), "slurm.additional: expected a mapping"),
        (base(slurm={"additional": {"mail_type": [1]}}), "slurm.additional.mail_type: expected a string or number"),
        (base(slurm={"additional": {"--mail": "x"}}), "slurm.additional.--mail: must be an sbatch long option"),
        (base(slurm={"time_min": 0}), "slurm.time_min: must be >= 1"),
        (base(slurm={"time_min": 2, "signal_delay_s": 120}), "slurm.signal_delay_s: 120 s is not shorter"),
        (base(slurm={"max_requeues": -1}), "slurm.max_requeues: must be >= 0"),
        (base(slurm={"nodes": 0}), "slurm.nodes: must be >= 1"),
        (base(slurm={"tasks_per_node": 0}), "slurm.tasks_per_node: must be >= 1"),
        (base(slurm={"gpus_per_node": 4, "tasks_per_node": 3}),
         "slurm.gpus_per_node: 4 GPUs cannot be split evenly between 3 tasks per node"),
        (base(slurm={"cpus_per_task": 0}), "slurm.cpus_per_task: must be >= 1"),
        (base(container={"enabled": "yes"}), "container.enabled: expected true or false"),
        (base(container={"enabled": True}), "container.image: must be the path of the .sif image"),
        (base(container={"binds": [":/x"]}), r"container.binds\[0\]: expected SRC"),
        (base(image={"min_driver": "new"}), "image.min_driver: expected a driver version"),
        (base(image={"build_args": "x"}), "image.build_args: expected a mapping"),
        (base(monitor={"mode": "http"}), "monitor.mode: must be one of textfile, pushgateway"),
        (base(monitor={"sidecar": True}), "monitor.textfile_dir: must name the node_exporter"),
        (base(monitor={"sidecar": True, "mode": "pushgateway"}), "monitor.pushgateway_url: must be an http"),
        ({"name": "t", "executor": "pbs"}, "executor: must be one of slurm, local"),
        ({"name": "a b"}, "name: must be a non-empty name"),
        ({"name": "t", "executor": "local", "container": {"enabled": True, "image": "/x.sif"}},
         "container.enabled: the local executor runs the trainer directly"),
        ({"name": "t", "source": "x"}, "source: unknown key"),
    ],
)
def test_bad_profiles_name_the_key(tmp_path: Path, raw: dict, message: str) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(ProfileError, match=message) as info:
        profile.load(path)
    assert str(path) in str(info.value)


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ProfileError, match="top level must be a mapping"):
        profile.load(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        profile.load(path)


def test_overrides_are_validated_too() -> None:
    assert profile.load("ci", ["slurm.time_min=3", "slurm.signal_delay_s=60"]).slurm.time_min == 3
    with pytest.raises(ProfileError, match="slurm.signal_delay_s: 600 s is not shorter"):
        profile.load("ci", ["slurm.time_min=3", "slurm.signal_delay_s=600"])


def test_mappings_kept_and_dump_round_trips(tmp_path: Path) -> None:
    raw = base(slurm={"additional": {"mail_type": "END", "exclusive": True}},
               image={"build_args": {"PIP_INDEX": "https://x"}})
    p = profile.load(write(tmp_path, raw))
    assert p.slurm.additional == {"mail_type": "END", "exclusive": True}
    assert p.image.build_args == {"PIP_INDEX": "https://x"}
    again = profile.from_dict(yaml.safe_load(profile.dump(p)))
    assert profile.to_dict(again) == profile.to_dict(p)
