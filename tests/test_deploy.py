"""The deploy files are valid for the platforms they target.

- `template.yaml` passes cfn-lint as it ships and with Lambda Managed Instances switched on; its
  rules refuse SnapStart with Managed Instances, and its conditions give one function per package
  and compute type, the Managed Instances ones without SnapStart.
- `deploy/kubernetes/` and the SpinKube autoscaler validate against the Kubernetes API schemas
  (kubernetes-validate, offline) of the oldest and newest supported versions, and the SpinApp
  against spin-operator's CRD schema (`tests/schemas/`), strictly (unknown fields refused).
- The variables they set are embedfn's own settings, and the probes, ports and metrics point at
  what the server serves.
- The Dockerfile lets Lambda publish SnapStart versions of the image.
"""

import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes" / "embedfn.yaml"
SPINAPP = ROOT / "deploy" / "spinkube" / "embedfn-spinapp.yaml"
SPINAPP_SCHEMA = Path(__file__).resolve().parent / "schemas" / "core.spinkube.dev_spinapps.v1alpha1.yaml"
TEMPLATE = ROOT / "template.yaml"
VERSIONS = ["1.30.0", "1.35.0"]
#: Every variable docs/configuration.md documents (its generated table and its other variables).
DOCUMENTED = set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)`", (ROOT / "docs" / "configuration.md").read_text(), re.M))


def documents(path=MANIFEST):
    return list(yaml.safe_load_all(path.read_text()))


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


# --- SpinKube -------------------------------------------------------------------------------


def strict(schema):
    """The CRD schema as the API server applies it with strict field validation (`kubectl apply
    --validate=strict`): an object that lists its properties takes no others, unless it says it
    keeps unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


SPINAPP_VALIDATOR = jsonschema.Draft4Validator(strict(yaml.safe_load(SPINAPP_SCHEMA.read_text())))


def validate_spinapp(doc):
    assert (doc["apiVersion"], doc["kind"]) == ("core.spinkube.dev/v1alpha1", "SpinApp")
    SPINAPP_VALIDATOR.validate(doc)


def test_the_spinapp_validates_against_spin_operators_crd():
    spinapp, hpa = documents(SPINAPP)
    validate_spinapp(spinapp)
    assert hpa["kind"] == "HorizontalPodAutoscaler"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_spinapps_autoscaler_validates_against_the_kubernetes_schema(version):
    hpa = documents(SPINAPP)[1]
    kubernetes_validate.validate(hpa, version, strict=True)


@pytest.mark.parametrize(
    "path, value",
    [
        (["spec", "replicas"], "two"),  # an int32
        (["spec", "executor"], {"name": "containerd-shim-spin"}),  # a string
        (["spec", "resources", "limits", "memory"], "half a gig"),  # a quantity
        (["spec", "checks", "liveness", "httpGet", "port"], 80),  # no such field
        (["spec", "replica"], 1),  # no such field
    ],
    ids=lambda v: ".".join(v) if isinstance(v, list) else None,
)
def test_a_broken_spinapp_is_refused(path, value):
    spinapp = documents(SPINAPP)[0]
    node = spinapp
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_spinapp(spinapp)


def test_the_spinapp_is_what_spin_operator_runs_and_embedfn_serves():
    spinapp, hpa = documents(SPINAPP)
    spec = spinapp["spec"]
    assert spec["executor"] == "containerd-shim-spin"
    # spin-operator's admission webhook: replicas and enableAutoscaling exclude each other, and
    # its Deployment (which the HPA scales) and Service take the SpinApp's name.
    assert spec["enableAutoscaling"] is True and "replicas" not in spec
    target = hpa["spec"]["scaleTargetRef"]
    deployment = ("apps/v1", "Deployment", spinapp["metadata"]["name"])
    assert (target["apiVersion"], target["kind"], target["name"]) == deployment
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # An HPA on resource utilization needs requests to measure against.
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Resource" and metric["resource"]["name"] in spec["resources"]["requests"]
    routes = (ROOT / "shared" / "core" / "src" / "routes.rs").read_text()
    for check in ("liveness", "readiness"):
        path = spec["checks"][check]["httpGet"]["path"]
        assert path == "/health" and f'"{path}"' in routes
    # A SpinApp's variables bind Spin application variables (SPIN_VARIABLE_<NAME> in the pod):
    # each must be declared in spin.toml and be one of embedfn's settings.
    declared = tomllib.loads((ROOT / "spin.toml").read_text()).get("variables", {})
    for variable in spec.get("variables", []):
        assert variable["name"] in declared, f"spin.toml declares no variable {variable['name']}"
        assert variable["name"].upper() in DOCUMENTED, variable["name"]


# --- template.yaml (AWS SAM) ----------------------------------------------------------------

CFN_LINT = Path(sys.executable).with_name("cfn-lint")
#: Parameter values that switch Lambda Managed Instances on.
MANAGED = {
    "ManagedInstances": "Enabled",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "SecurityGroupIds": "sg-0123456789abcdef0",
    "InstanceTypes": "c7i.xlarge,c7i.2xlarge",
}
IMAGE = {"PackageType": "Image", "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/embedfn:latest"}


def template():
    return cfn_yaml.loads(TEMPLATE.read_text())


def cfn_lint(path):
    run = subprocess.run([str(CFN_LINT), str(path)], capture_output=True, text=True, timeout=300)
    return run.returncode, run.stdout + run.stderr


def lint_with_defaults(tmp_path, values):
    """cfn-lint takes no parameter values: lint a copy whose defaults are `values`, without the
    template's W1030 exception (which covers only the empty VPC defaults)."""
    copy = template()
    copy.pop("Metadata")
    for name, value in values.items():
        copy["Parameters"][name]["Default"] = value
    path = tmp_path / "template.json"
    path.write_text(json.dumps(copy, indent=1))
    return cfn_lint(path)


def test_cfn_lint_passes_the_template_as_it_ships():
    code, output = cfn_lint(TEMPLATE)
    assert code == 0, output


@pytest.mark.parametrize("package", [{}, IMAGE], ids=["zip", "image"])
def test_cfn_lint_passes_the_template_with_managed_instances(tmp_path, package):
    code, output = lint_with_defaults(tmp_path, MANAGED | package)
    assert code == 0, output


def test_cfn_lint_refuses_a_managed_instances_copy_with_a_bad_subnet(tmp_path):
    code, output = lint_with_defaults(tmp_path, MANAGED | {"SubnetIds": "my-subnet"})
    assert code != 0 and "my-subnet" in output, output


def evaluate(node, params, conditions):
    """Evaluates what CloudFormation's Conditions, Rules and Outputs use here; resource
    attributes and references are returned as they are."""
    ev = lambda n: evaluate(n, params, conditions)  # noqa: E731
    if isinstance(node, list):
        return [ev(n) for n in node]
    if not (isinstance(node, dict) and len(node) == 1):
        return node
    ((fn, arg),) = node.items()
    if fn == "Ref":
        return params.get(arg, node)
    if fn == "Condition":
        return ev(conditions[arg])
    if fn == "Fn::If":
        return ev(arg[1] if ev(conditions[arg[0]]) else arg[2])
    if fn == "Fn::Equals":
        return str(ev(arg[0])) == str(ev(arg[1]))
    if fn == "Fn::Not":
        return not ev(arg[0])
    if fn == "Fn::And":
        return all(ev(a) for a in arg)
    if fn == "Fn::Or":
        return any(ev(a) for a in arg)
    if fn == "Fn::Contains":
        return ev(arg[1]) in ev(arg[0])
    if fn == "Fn::Join":
        return ev(arg[0]).join(ev(arg[1]))
    return node


def parameters(tpl, values):
    """Every parameter's value: `values`, else its default; a CommaDelimitedList is a list."""
    params = {}
    for name, spec in tpl["Parameters"].items():
        value = values.get(name, spec.get("Default"))
        params[name] = str(value).split(",") if spec["Type"] == "CommaDelimitedList" else value
    return params


def refused(tpl, values):
    """The assertion descriptions of the template's Rules that these parameter values fail."""
    params = parameters(tpl, values)
    failed = []
    for rule in tpl["Rules"].values():
        if evaluate(rule.get("RuleCondition", True), params, {}):
            failed += [a["AssertDescription"] for a in rule["Assertions"] if not evaluate(a["Assert"], params, {})]
    return failed


@pytest.mark.parametrize(
    "managed, snap_start, subnets, groups",
    list(itertools.product(["Disabled", "Enabled"], ["None", "PublishedVersions"], ["", "subnet-0a"], ["", "sg-0a"])),
)
def test_the_rules_refuse_snapstart_and_a_missing_vpc_with_managed_instances(managed, snap_start, subnets, groups):
    tpl = template()
    values = {"ManagedInstances": managed, "SnapStart": snap_start, "SubnetIds": subnets, "SecurityGroupIds": groups}
    expected = managed == "Enabled" and (snap_start != "None" or not subnets or not groups)
    assert bool(refused(tpl, values)) == expected, refused(tpl, values)


@pytest.mark.parametrize("managed", [{}, MANAGED], ids=["default compute", "managed instances"])
@pytest.mark.parametrize("package", [{}, IMAGE], ids=["zip", "image"])
def test_one_function_per_package_and_compute_type(managed, package):
    tpl = template()
    params = parameters(tpl, managed | package)
    conditions = tpl["Conditions"]
    resources = tpl["Resources"]

    def exists(item):
        return "Condition" not in item or evaluate(conditions[item["Condition"]], params, conditions)

    created = {n: r for n, r in resources.items() if exists(r)}
    (name,) = [n for n, r in created.items() if r["Type"] == "AWS::Serverless::Function"]
    props = created[name]["Properties"]
    assert props.get("PackageType", "Zip") == params["PackageType"]
    assert props["AutoPublishAlias"] == "live" and "FunctionUrlConfig" in props
    outputs = {k: evaluate(v["Value"], params, conditions) for k, v in tpl["Outputs"].items() if exists(v)}
    assert outputs["FunctionUrl"] == {"Fn::GetAtt": [f"{name}Url", "FunctionUrl"]}
    assert outputs["FunctionName"] == {"Ref": name}
    if managed:
        # SAM rewrites CapacityProviderConfig only when it is a plain mapping (no Fn::If).
        config = props["CapacityProviderConfig"]
        assert set(config) == {"Arn", "PerExecutionEnvironmentMaxConcurrency", "ExecutionEnvironmentMemoryGiBPerVCpu"}
        assert config["Arn"] == {"Fn::GetAtt": ["CapacityProvider", "Arn"]}
        # Lambda hands PerExecutionEnvironmentMaxConcurrency to the function as
        # AWS_LAMBDA_MAX_CONCURRENCY, which embedfn reads.
        assert config["PerExecutionEnvironmentMaxConcurrency"] == {"Ref": "MaxConcurrency"}
        assert '"AWS_LAMBDA_MAX_CONCURRENCY"' in (ROOT / "shared" / "core" / "src" / "settings.rs").read_text()
        assert "SnapStart" not in props
        provider = created["CapacityProvider"]["Properties"]
        assert provider["InstanceRequirements"]["Architectures"] == tpl["Globals"]["Function"]["Architectures"]
        assert "CapacityProviderArn" in outputs
    else:
        assert "CapacityProviderConfig" not in props
        assert props["SnapStart"] == {"ApplyOn": {"Ref": "SnapStart"}}
        assert "CapacityProvider" not in created and "CapacityProviderArn" not in outputs


# --- Dockerfile -----------------------------------------------------------------------------


def test_the_image_allows_lambda_snapstart():
    """Lambda publishes a SnapStart version of a container image only if the image carries this
    label or its runtime calls restore/next (the binary does both: tests/test_lambda.py)."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    final_stage = instructions[last_from:]
    labels = [line for line in final_stage if line.startswith("LABEL ")]
    assert 'LABEL com.amazonaws.lambda.feature.snapstart="Allow"' in labels, labels
    assert any(line.startswith("ENTRYPOINT") and "/app/embedfn" in line for line in final_stage)
