"""The Kubernetes manifests in ``deploy/``, checked offline: every resource against the
Kubernetes OpenAPI schemas bundled in ``kubernetes-validate`` (PyPI, in the ``dev`` extra;
strict: unknown fields are errors) with the network blocked, and against the application:
probe paths are routes that need no key, ports and ``GALACTO_*`` names are the settings'
own, the configured environment starts the service, writable paths are volumes on a read-only
root filesystem, the Secret's placeholder is refused, and memory is sized from measurements.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_container import IN_CI, REPO, SERVE, parse_dockerfile, pyproject

DEPLOY = REPO / "deploy"
#: Kubernetes versions the manifests are checked against (oldest supported, newest bundled).
K8S_VERSIONS = ("1.30", "1.37")
#: Not applied by kustomize, on purpose: the real Secret is made with `kubectl create secret`.
NOT_IN_KUSTOMIZATION = {"secret.yaml"}

#: Measured memory, MB (README; benchmarks/http_load.py, pipeline_speed.py, gateway_load.py).
API_RSS_WARM_MB = 250          # galacto serve after warm-up, one inference slot
API_PEAK_MB = 320              # peak during one 4096 x 3328 inference
GATEWAY_PEAK_MB = {1: 370, 2: 509}  # `serve --gateway`, by GALACTO_GATEWAY_WORKERS
INSTANCE_MB = 27               # one 4096 x 3328 16-bit instance held while it arrives
MI = 1024 * 1024


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += _docs(path)
    return out


def _one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _workloads(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any], secret_value: str = "") -> dict[str, str]:
    out = {}
    for e in container.get("env", []):
        out[e["name"]] = e.get("value", secret_value)
    return out


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / MI, "G": 1e9 / MI}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity)
    assert m and m.group(2) in units, quantity
    return float(m.group(1)) * units[m.group(2)]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GALACTO_* variable from the machine running the tests."""
    for var in list(os.environ):
        if var.startswith("GALACTO_"):
            monkeypatch.delenv(var)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any connection attempt fails the test (proves the validation is offline)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def _validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        if IN_CI:
            pytest.fail("kubernetes-validate is missing (in the dev extra)")
        pytest.skip("kubernetes-validate not installed (pip install kubernetes-validate)")
    return kubernetes_validate


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - NOT_IN_KUSTOMIZATION
    assert files >= NOT_IN_KUSTOMIZATION
    assert not list(DEPLOY.glob("*.yml")), "use .yaml"
    # image tag = the package version, in the manifests and in kustomize's override
    project = pyproject()["project"]
    assert isinstance(project, dict)
    version = project["version"]
    assert kust["images"] == [{"name": "galacto", "newTag": version}]


def test_manifests_validate_offline_against_kubernetes_schemas(
        resources: list[dict[str, Any]], no_network: None) -> None:
    kv = _validator()
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler",
            "Secret", "PodDisruptionBudget"} <= kinds
    for version in K8S_VERSIONS:
        for resource in resources:
            kv.validate(resource, version, strict=True)  # raises on any schema error


def test_validator_is_not_vacuous(resources: list[dict[str, Any]], no_network: None) -> None:
    """A typo and a wrong type are caught (so a passing check means something)."""
    kv = _validator()
    deployment = _one(resources, "Deployment", "galacto-api")
    typo = copy.deepcopy(deployment)
    probe = typo["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = probe
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    for bad in (typo, wrong):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_probes_are_open_routes_on_the_settings_port(resources: list[dict[str, Any]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.api.auth import is_open
    from serving.api.main import create_app
    from serving.settings import Settings

    _clean_env(monkeypatch)
    routes = set(create_app(Settings()).openapi()["paths"])
    http_port = Settings.model_fields["port"].default
    for workload in _workloads(resources):
        c = _container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == http_port
        assert _env(c)["GALACTO_PORT"] == str(http_port)
        # kubelet sends Host: <pod IP> unless told otherwise; the Host check refuses that
        allowed = Settings(allowed_hosts=_env(c)["GALACTO_ALLOWED_HOSTS"]).trusted_hosts
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                    "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path and get["path"] in routes, (probe, get)
            assert is_open(get["path"]), f"{get['path']} must not need a key (kubelet has none)"
            assert get["port"] in ("http", http_port)
            host = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}.get("Host")
            assert host in allowed, (probe, host, allowed)


def test_services_reach_container_ports(resources: list[dict[str, Any]]) -> None:
    from serving.gateway.settings import GatewaySettings
    from serving.settings import Settings

    services = [r for r in resources if r["kind"] == "Service"]
    by_port = {}
    for svc in services:
        selector = svc["spec"]["selector"]
        pods = [w for w in _workloads(resources)
                if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in selector.items())]
        assert pods, f"service {svc['metadata']['name']} selects no workload"
        for w in pods:
            names = {p["name"]: p["containerPort"] for p in _container(w)["ports"]}
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in names, (svc["metadata"]["name"], port)
                by_port[port["name"]] = port["port"]
    assert by_port == {"http": Settings.model_fields["port"].default,
                       "dicom": GatewaySettings.model_fields["port"].default}
    # the api Service never sends DICOM or HTTP traffic to the gateway pod, and vice versa
    api = _one(resources, "Service", "galacto")
    assert api["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    gw = _one(resources, "StatefulSet", "galacto-gateway")
    headless = _one(resources, "Service", gw["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_env_names_are_settings_and_start_the_service(resources: list[dict[str, Any]],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    from serving.gateway.settings import GatewaySettings
    from serving.settings import Settings

    key = secrets.token_urlsafe(32)
    for workload in _workloads(resources):
        c = _container(workload)
        env = _env(c, secret_value=key)
        assert env, workload["metadata"]["name"]
        for name in env:
            assert name.startswith("GALACTO_"), name
            if name.startswith("GALACTO_GATEWAY_"):
                field = name.removeprefix("GALACTO_GATEWAY_").lower()
                assert field in GatewaySettings.model_fields, name
            else:
                assert name.removeprefix("GALACTO_").lower() in Settings.model_fields, name
        _clean_env(monkeypatch)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings, gateway = Settings(), GatewaySettings()
        settings.check_safe()  # starts: auth on, with a real key
        assert settings.auth and settings.api_keys == [key]
        assert settings.host == "0.0.0.0" and settings.log_json
        assert settings.allowed_hosts and "*" not in settings.allowed_hosts  # checked Host
        if workload["kind"] == "StatefulSet":
            assert gateway.enabled and gateway.host == "0.0.0.0"


def test_manifest_configuration_serves_probes_without_a_key(resources: list[dict[str, Any]],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """The api Deployment's environment, in process: probes open, the API behind the key."""
    from fastapi.testclient import TestClient

    from serving.api.main import create_app
    from serving.settings import Settings

    key = secrets.token_urlsafe(32)
    env = _env(_container(_one(resources, "Deployment", "galacto-api")), secret_value=key)
    _clean_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GALACTO_RESULTS_DIR", str(tmp_path / "results"))
    app = create_app(Settings())
    # Host: localhost (the Host check allows loopback names, not 'testserver')
    with TestClient(app, base_url="http://localhost") as client:
        app.state.galacto.wait_loaded(60)
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/models").status_code == 401
        ok = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200


def test_secret_placeholder_is_refused_and_wired(resources: list[dict[str, Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.settings import Settings, SettingsError

    secret = _one(resources, "Secret", "galacto-api-keys")
    placeholder = secret["stringData"]["api-keys"]
    _clean_env(monkeypatch)
    monkeypatch.setenv("GALACTO_AUTH", "true")
    monkeypatch.setenv("GALACTO_API_KEYS", placeholder)
    with pytest.raises(SettingsError, match="placeholder"):
        Settings().check_safe()
    # an empty Secret value does not turn authentication off: GALACTO_AUTH=true is explicit
    monkeypatch.setenv("GALACTO_API_KEYS", "")
    with pytest.raises(SettingsError):
        Settings().check_safe()
    text = (DEPLOY / "secret.yaml").read_text() + (DEPLOY / "kustomization.yaml").read_text()
    assert "kubectl create secret generic galacto-api-keys" in text
    for workload in _workloads(resources):
        c = _container(workload)
        env = {e["name"]: e for e in c["env"]}
        assert env["GALACTO_AUTH"]["value"] == "true"
        ref = env["GALACTO_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "galacto-api-keys", "key": "api-keys"}


def test_security_context_and_writable_paths(resources: list[dict[str, Any]]) -> None:
    from serving.gateway.settings import GatewaySettings

    user = parse_dockerfile().stage(SERVE).last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    for workload in _workloads(resources):
        spec = workload["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == (uid, gid)
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        c = _container(workload)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        env = _env(c)
        writable = ["/tmp", env["GALACTO_RESULTS_DIR"]]
        if "GALACTO_GATEWAY_SPOOL_DIR" in env:
            writable.append(env["GALACTO_GATEWAY_SPOOL_DIR"])
        for path in writable:
            assert path in mounts, f"{workload['metadata']['name']}: {path} is not writable"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for path, name in mounts.items():
            assert name in volumes or name in claims, (path, name)
            if name in volumes:
                assert "emptyDir" in volumes[name], (path, "only scratch space is emptyDir")
    # the spool is a PersistentVolumeClaim, one per gateway, and nothing scales the gateway
    gw = _one(resources, "StatefulSet", "galacto-gateway")
    assert gw["spec"]["replicas"] == 1
    spool = _env(_container(gw))["GALACTO_GATEWAY_SPOOL_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in _container(gw)["volumeMounts"]}
    template = next(t for t in gw["spec"]["volumeClaimTemplates"]
                    if t["metadata"]["name"] == mounts[spool])
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    quota_mb = float(_env(_container(gw))["GALACTO_GATEWAY_SPOOL_MAX_MB"])
    assert quota_mb < _mebibytes(template["spec"]["resources"]["requests"]["storage"])
    assert quota_mb < GatewaySettings.model_fields["spool_max_mb"].default
    hpa_targets = {r["spec"]["scaleTargetRef"]["name"] for r in resources
                   if r["kind"] == "HorizontalPodAutoscaler"}
    assert "galacto-gateway" not in hpa_targets


def test_resources_sized_from_measured_memory(resources: list[dict[str, Any]]) -> None:
    from serving.settings import Settings

    api = _container(_one(resources, "Deployment", "galacto-api"))
    env = _env(api)
    slots = int(env["GALACTO_MAX_CONCURRENT_INFERENCES"])
    queue = int(env["GALACTO_MAX_QUEUE"])
    upload = float(env["GALACTO_MAX_UPLOAD_MB"])
    assert upload < Settings.model_fields["max_upload_mb"].default
    req = _mebibytes(api["resources"]["requests"]["memory"])
    lim = _mebibytes(api["resources"]["limits"]["memory"])
    assert req >= API_PEAK_MB * 1e6 / MI
    # bodies wait in memory for a slot (read whole, then parsed: counted twice)
    worst = API_PEAK_MB + (slots + queue) * 2 * upload
    assert lim * MI >= worst * 1e6 * 0.99, (lim, worst)
    assert lim <= 4 * worst, "limit far above the measured need"
    # 2 views of 4096 x 3328 fit in one request
    assert upload >= 2 * INSTANCE_MB
    assert _mebibytes(api["resources"]["requests"]["memory"]) >= API_RSS_WARM_MB
    threads = int(env["GALACTO_ORT_THREADS"])
    cpu_limit = float(api["resources"]["limits"]["cpu"])
    assert slots * threads <= cpu_limit

    gw = _container(_one(resources, "StatefulSet", "galacto-gateway"))
    genv = _env(gw)
    workers = int(genv["GALACTO_GATEWAY_WORKERS"])
    assert workers in GATEWAY_PEAK_MB, "measure the gateway with this many workers first"
    from serving.gateway.settings import GatewaySettings

    assoc = GatewaySettings.model_fields["max_associations"].default
    greq = _mebibytes(gw["resources"]["requests"]["memory"])
    glim = _mebibytes(gw["resources"]["limits"]["memory"])
    assert greq >= GATEWAY_PEAK_MB[workers]
    assert glim >= GATEWAY_PEAK_MB[workers] + assoc * INSTANCE_MB
    for c in (api, gw):
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])


def test_hpa_scales_the_api_on_cpu(resources: list[dict[str, Any]]) -> None:
    hpa = _one(resources, "HorizontalPodAutoscaler", "galacto-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    target = _one(resources, ref["kind"], ref["name"])
    assert target["kind"] == "Deployment" and ref["apiVersion"] == target["apiVersion"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in _container(target)["resources"]["requests"], "Utilization needs a request"
    assert 1 <= hpa["spec"]["minReplicas"] <= target["spec"]["replicas"] \
        <= hpa["spec"]["maxReplicas"]
    pdb = _one(resources, "PodDisruptionBudget", "galacto-api")
    assert pdb["spec"]["selector"]["matchLabels"] == target["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_workloads_run_the_image_entrypoint(resources: list[dict[str, Any]]) -> None:
    """Pods use the image's ENTRYPOINT (galacto) with `serve`; the tag is the version."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    for workload in _workloads(resources):
        c = _container(workload)
        assert "command" not in c, "keep the image's ENTRYPOINT"
        assert c["args"] == ["serve"]
        assert c["image"] == f"galacto:{project['version']}"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
