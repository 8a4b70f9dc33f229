"""deployments/ and docker/: parsed and checked against the code and the real worker classes.

No Docker engine or Kubernetes cluster runs here, so these tests validate the files: every
entrypoint imports to a flow, every referenced path exists, the GPU requests render through the
real Prefect worker job configurations.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from tests_support import REPO

DEPLOY = REPO / "deployments"
DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


def test_every_deployment_entrypoint_is_a_flow(prefect_yaml: dict):
    names = {d["name"] for d in prefect_yaml["deployments"]}
    assert {"finetune", "scheduled-retrain"} <= names
    from prefect import Flow

    for d in prefect_yaml["deployments"]:
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).is_file(), d["entrypoint"]
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, func), Flow), d["entrypoint"]
        assert d["work_pool"]["name"] in {"local-process", "gpu-docker", "gpu-k8s"}


def test_retrain_is_scheduled_with_a_valid_cron(prefect_yaml: dict):
    from prefect.client.schemas.schedules import CronSchedule

    (retrain,) = [d for d in prefect_yaml["deployments"] if d["name"] == "scheduled-retrain"]
    (schedule,) = retrain["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron
    assert retrain["concurrency_limit"] == 1


def test_flow_parameters_form_comes_from_the_pipeline_config():
    from prefect.utilities.callables import parameter_schema

    from flows.finetune import finetune

    schema = parameter_schema(finetune).model_dump()
    assert schema["properties"]["cfg"]["$ref"].endswith("PipelineConfig")
    config = schema["definitions"]["PipelineConfig"]
    assert {"ingest", "train", "extend_bpe", "storage"} <= set(config["properties"])
    assert schema["definitions"]["TrainConfig"]["properties"]["epochs"]["exclusiveMinimum"] == 0


def test_docker_pool_requests_every_gpu(prefect_yaml: dict):
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    pool = prefect_yaml["definitions"]["work_pools"]["gpu_docker"]
    config = asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(
        DockerWorker.get_default_base_job_template(), pool["job_variables"]))
    (request,) = config.container_create_kwargs["device_requests"]
    assert request == {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
    assert config.image == "indextts-train-gpu:latest"


def test_kubernetes_pool_limits_nvidia_gpus(prefect_yaml: dict):
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((DEPLOY / "k8s-gpu-job-template.json").read_text())
    placeholders = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"]), "every placeholder is a declared variable"
    values = {**prefect_yaml["definitions"]["work_pools"]["gpu_k8s"]["job_variables"], "gpu_limit": 2}
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values))
    container = config.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["image"] == "indextts-train-gpu:latest"
    default = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, {}))
    assert default.job_manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == 1


def _copies(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


def test_compose_stack_is_complete_and_its_files_exist():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "minio", "worker"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            for src in _copies(dockerfile):
                assert (context / src).exists(), f"{name}: COPY {src} (context {context})"
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("."):
                assert (DOCKER / host).exists(), f"{name}: volume {host}"
    worker = services["worker"]
    (gpu,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert "local-process" in worker["command"]
    assert "--artifacts-destination s3://" in services["mlflow"]["command"]
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]


def test_worker_image_installs_from_the_lock_file():
    text = (DOCKER / "worker-gpu.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+", text, re.M)
    assert "uv sync --locked" in text
    assert not (DOCKER / "__init__.py").exists() and not list(DOCKER.glob("*.py")), \
        "docker/ must hold no Python files (it would shadow the docker SDK)"


def test_the_scheduled_deployment_takes_its_run_config_as_a_parameter(prefect_yaml: dict):
    """Found in use: it ran with `params: {}`, the bundled data at an absolute path baked in at deploy time.
    It names the demo by name (`demo`: the run YAML shipped in the package), so no path is baked in."""
    from flows.config_source import read_run_config
    from indextts_core.config import DEMO_CONFIG, load_config

    retrain = next(d for d in prefect_yaml["deployments"] if d["name"] == "scheduled-retrain")
    config = retrain["parameters"]["config"]
    assert config == "demo" and read_run_config(config) == load_config(DEMO_CONFIG)
    from flows.retrain import scheduled_retrain

    params = scheduled_retrain.parameters.properties
    assert "config" in params and "variable://" in params["config"].get("description", "")


def test_a_missing_run_config_names_itself():
    from flows.config_source import read_run_config
    from indextts_core.config import ConfigError

    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        read_run_config("nowhere.yaml")


def test_images_are_pinned_healthchecked_and_the_context_is_small():
    """Found in use: `minio:latest`, no healthcheck on prefect-server, configs/ missing from the worker image, and no
    .dockerignore while the build context is the repository root (a 5.5 GB .venv and runs/ would be sent)."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        image = svc.get("image")
        if image and "build" not in svc:
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image} is not pinned"
        if name != "minio-buckets":  # a one-shot job: the others wait for it to complete
            assert "healthcheck" in svc, f"{name}: no healthcheck"
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM ") and "${" not in line:
                assert re.search(r":\S*\d", line.split()[1]), f"{dockerfile.name}: {line} is not pinned"
    assert "COPY configs" in (DOCKER / "worker-gpu.Dockerfile").read_text()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv/", "runs/", ".git/"} <= set(ignored)
