"""infra/ray/kuberay-cluster.yaml is a RayCluster that KubeRay accepts, for the Ray that the
project pins, running the image that scripts/build_image.sh builds."""

import re
from pathlib import Path

import pytest
import yaml
from raycluster_schema import SPEC, spec_errors, unvetted_paths, vendored_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(SPEC.read_text())


def groups(cluster: dict) -> list[dict]:
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


def pinned(package: str) -> str:
    (version,) = re.findall(rf"^{package}==(\S+)$", (ROOT / "constraints" / "lock.txt").read_text(), re.M)
    return version


def test_the_spec_validates_against_kuberays_raycluster_schema(cluster):
    assert spec_errors(cluster) == []


def test_the_vendored_schema_covers_every_field_the_spec_sets(cluster):
    unvetted = unvetted_paths(vendored_schema(), cluster)
    assert unvetted == [], (
        f"the spec sets fields the vendored schema subset does not check: {unvetted}; cut it again "
        "with `python tests/infra/raycluster_schema.py ray.io_rayclusters.yaml KUBERAY_TAG`"
    )


def test_the_schema_check_rejects_what_the_api_server_rejects(cluster):
    worker = cluster["spec"]["workerGroupSpecs"][0]
    broken = {**cluster, "spec": {**cluster["spec"], "workerGroupSpecs": [
        {**{k: v for k, v in worker.items() if k != "groupName"}, "maxReplicas": "8", "replica": 1}]}}
    errors = "\n".join(spec_errors(broken))
    assert "'groupName' is a required property" in errors
    assert "'8' is not of type 'integer'" in errors
    assert "'replica' was unexpected" in errors


def test_ray_version_is_the_ray_the_project_pins(cluster):
    assert cluster["spec"]["rayVersion"] == pinned("ray")


def test_every_container_runs_the_image_that_build_image_builds(cluster):
    script = (ROOT / "scripts" / "build_image.sh").read_text()
    (default_image,) = re.findall(r"cuda\) IMAGE=\$\{TANDEM_IMAGE:-([^}]+)\}", script)
    for group in groups(cluster):
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == default_image, container["name"]


def test_groups_pass_the_operators_own_checks(cluster):
    """ValidateRayClusterSpec (ray-operator/controllers/ray/utils/validation.go, KubeRay v1.7.0)."""
    assert cluster["spec"].get("enableInTreeAutoscaling") is not True  # so min/max are required
    for group in groups(cluster):
        assert group["template"]["spec"]["containers"], "each group needs a container"
        start = group.get("rayStartParams", {})
        assert "labels" not in start, "labels go in the group's top-level labels field"
        if group.get("resources"):
            assert not {"num-cpus", "num-gpus", "memory", "resources"} & start.keys()
    for worker in cluster["spec"]["workerGroupSpecs"]:
        assert 0 <= worker["minReplicas"] <= worker.get("replicas", 0) <= worker["maxReplicas"], worker["groupName"]
