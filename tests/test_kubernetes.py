"""The Kubernetes manifests (ops/kubernetes/), on paper: valid against Kubernetes'
own schemas (kubernetes-validate bundles them: offline, no kubectl, no cluster),
strictly (a misspelt or unknown field fails), and in agreement with what the
service and its image really do: the ports, the probes' paths, the arguments, the
drain's time, the user, the names the Service gives it. A real service with the
manifest's settings answers the probes and the Service's names."""

from __future__ import annotations

import copy
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from rtap_trio.settings import load_settings

from .support import REPO, in_process_service, service_settings

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (the dev extra)"
)

KUBE = REPO / "ops" / "kubernetes"
#: 1.30: the first release with preStop's sleep action on by default; and the newest
#: schemas the package bundles.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(KUBE.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment", "rtap")["spec"]["template"]["spec"]["containers"]
    return container


def _image_env() -> dict[str, str]:
    """The ``ENV`` of the Containerfile's runtime stage: what the pod starts with."""
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    (env,) = [line for line in text.splitlines() if line.startswith("ENV ")][-1:]
    return dict(pair.split("=", 1) for pair in env.split()[1:])


def _pod_settings() -> Any:
    """The settings the pod runs with: the image's environment, then the manifest's
    (the Secret's token stood in for)."""
    env = _image_env()
    for variable in _container()["env"]:
        env[variable["name"]] = variable.get("value", "a-token-from-the-secret")
    return load_settings(directory=REPO / "settings", environ=env)  # the image's copy


def test_every_manifest_validates_strictly_against_kubernetes_schemas() -> None:
    documents = _documents()
    assert {(d["kind"], d["metadata"]["name"]) for d in documents} == {
        ("Deployment", "rtap"),
        ("PodDisruptionBudget", "rtap"),
        ("Service", "rtap"),
        ("Service", "rtap-streams"),
    }
    for version in VERSIONS:
        for document in documents:
            kubernetes_validate.validate(document, version, strict=True)


def test_the_check_catches_a_misspelt_field_and_a_wrong_type() -> None:
    deployment = _one("Deployment", "rtap")
    misspelt = copy.deepcopy(deployment)
    pod = misspelt["spec"]["template"]["spec"]
    pod["terminationGraceSeconds"] = pod.pop("terminationGracePeriodSeconds")
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    for bad in (misspelt, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_the_deployment_runs_the_image_as_it_is_built_and_probes_what_it_serves() -> None:
    container = _container()
    containerfile = (REPO / "Containerfile").read_text()
    image = re.search(r'IMAGE="\$\{RTAP_IMAGE:-([^}]+)\}"', (REPO / "scripts/image.sh").read_text())
    assert image and container["image"] == image.group(1)
    # The image's entrypoint is `python -m rtap_trio`: network sessions only.
    assert container["args"] == ["run", "--source", "none"]
    settings = _pod_settings()
    assert settings.output.bind_address == "0.0.0.0" and settings.security.token is not None
    assert settings.wyoming.enabled
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {
        "http": settings.http.port,
        "websocket": settings.output.websocket_port,
        "wyoming": settings.wyoming.port,
        "zmq-events": settings.output.zmq_pub_port_events,
        "zmq-transcripts": settings.output.zmq_pub_port_transcripts,
        "zmq-catchup": settings.output.zmq_catchup_port,
    }
    exposed = re.search(r"^EXPOSE (.+)$", containerfile, re.M)
    assert exposed and {int(p) for p in exposed.group(1).split()} <= set(ports.values())
    # Started and ready on /health, as the image's HEALTHCHECK; alive on /metrics,
    # which answers 200 while /health says draining (503).
    assert f"127.0.0.1:{settings.http.port}/health" in containerfile
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "http"}
    annotations = _one("Deployment", "rtap")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.http.port)
    # The image's user, and the budget of one rtap@N instance on a host.
    pod = _one("Deployment", "rtap")["spec"]["template"]["spec"]
    assert "USER 10001:10001" in containerfile
    assert pod["securityContext"]["runAsUser"] == 10001
    unit = (REPO / "ops" / "systemd" / "rtap@.service").read_text()
    assert "MemoryMax=1G" in unit and "CPUQuota=200%" in unit
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_the_pod_outlasts_the_drain_before_the_kubelets_sigkill() -> None:
    settings = _pod_settings()
    pod = _one("Deployment", "rtap")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = settings.sessions.drain_timeout_s
    grace = settings.supervisor.shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + grace + 5
    # Never fewer than all replicas but one, in a rollout or a node's drain.
    deployment = _one("Deployment", "rtap")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _one("PodDisruptionBudget", "rtap")["spec"]["maxUnavailable"] == 1


def test_the_services_reach_the_pods_ports_and_the_streams_are_not_balanced() -> None:
    deployment = _one("Deployment", "rtap")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    balanced, streams = _one("Service", "rtap"), _one("Service", "rtap-streams")
    for service in (balanced, streams):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], port
    assert {p["name"] for p in balanced["spec"]["ports"]} == {"http", "websocket", "wyoming"}
    # ZeroMQ: every pod's address (headless), draining ones too: a subscriber
    # behind a balanced port would hear one pod.
    assert {p["name"] for p in streams["spec"]["ports"]} == {
        "zmq-events",
        "zmq-transcripts",
        "zmq-catchup",
    }
    assert streams["spec"]["clusterIP"] == "None"
    assert streams["spec"]["publishNotReadyAddresses"] is True


def _get(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.timeout(120)
async def test_a_service_with_the_pods_settings_answers_the_probes_and_the_service_names(
    tmp_path: Path,
) -> None:
    # The pod's access settings (the names the Service gives it) on a service bound to
    # loopback here: the kubelet probes by the pod's IP, clients by the Service's name.
    pod = _pod_settings()
    settings = service_settings(
        "pc2",
        **{
            "audio.source": "none",
            "security.allowed_hosts": pod.security.allowed_hosts,
        },
    )
    service = in_process_service(settings)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)
        base = f"http://127.0.0.1:{ports.telemetry}"

        def probes() -> dict[str, int]:
            return {
                "health": _get(f"{base}/health", f"127.0.0.1:{ports.telemetry}"),
                "metrics": _get(f"{base}/metrics", f"127.0.0.1:{ports.telemetry}"),
                "by name": _get(f"{base}/health", "rtap.default.svc.cluster.local:8080"),
                "short name": _get(f"{base}/health", "rtap:8080"),
                "a stranger": _get(f"{base}/health", "rtap.example.org"),
            }

        answers = await trio.to_thread.run_sync(probes)
        assert answers == {
            "health": 200,
            "metrics": 200,
            "by name": 200,
            "short name": 200,
            "a stranger": 421,
        }, answers
        service.stop()
