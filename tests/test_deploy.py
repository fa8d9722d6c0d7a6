"""The deploy files are valid for the platforms they target: `template.yaml` passes cfn-lint
(the test command runs it), and `deploy/kubernetes/` validates against the Kubernetes API
schemas (kubernetes-validate, offline) of the oldest and newest supported versions; the variables
they set are embedfn's own settings, and the probes and ports point at what the server serves."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes" / "embedfn.yaml"
VERSIONS = ["1.30.0", "1.35.0"]
#: Every variable docs/configuration.md documents (its generated table and its other variables).
DOCUMENTED = set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)`", (ROOT / "docs" / "configuration.md").read_text(), re.M))


def documents():
    return list(yaml.safe_load_all(MANIFEST.read_text()))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(version):
    kinds = []
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler"]


def test_a_broken_object_is_refused():
    deployment = documents()[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_manifest_speaks_embedfns_settings_and_routes():
    deployment, service, hpa = documents()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= DOCUMENTED, set(env) - DOCUMENTED
    assert env["HOST"]["value"] == "0.0.0.0"  # the default, 127.0.0.1, would not reach the pod
    port = int(env["PORT"]["value"])
    assert container["ports"][0]["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    grace = int(env["SHUTDOWN_GRACE_MS"]["value"]) / 1000
    assert grace < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    queue = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"][0]["pods"]["metric"]["name"]
    metrics_source = (ROOT / "shared" / "core" / "src" / "metrics.rs").read_text()
    assert f'"{queue}"' in metrics_source, f"/metrics exports no {queue}"
