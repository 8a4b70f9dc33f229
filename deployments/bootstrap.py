"""Create (or update) what the deployments expect on a Prefect server.  Idempotent.

    PREFECT_API_URL=http://prefect:4200/api python deployments/bootstrap.py [--pools local-process gpu-docker gpu-k8s]

* work pools: ``local-process`` (type process), ``gpu-docker`` (type docker, default template of
  prefect-docker) and ``gpu-k8s`` (type kubernetes, ``k8s-gpu-job-template.json``); a pool whose
  worker integration is not installed here is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOLS = {"local-process": "process", "gpu-docker": "docker", "gpu-k8s": "kubernetes"}


def base_job_template(pool_type: str) -> dict | None:
    if pool_type == "kubernetes":
        return json.loads((HERE / "k8s-gpu-job-template.json").read_text())
    if pool_type == "docker":
        try:
            from prefect_docker.worker import DockerWorker
        except ImportError:
            return None
        return DockerWorker.get_default_base_job_template()
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", nargs="*", default=list(POOLS), choices=list(POOLS))
    args = parser.parse_args(argv)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for name in args.pools:
            pool_type = POOLS[name]
            template = base_job_template(pool_type)
            if template is None:
                print(f"skip {name}: the {pool_type} worker integration is not installed (uv sync --extra workers)")
                continue
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
                print(f"created work pool {name} ({pool_type})")
            except ObjectAlreadyExists:
                client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
                print(f"updated work pool {name} ({pool_type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
