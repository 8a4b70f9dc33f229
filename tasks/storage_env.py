"""The configuration's S3 settings as the environment variables boto3 reads, for the clients that take no others.

MLflow's artifact upload and Prefect's result block build their own S3 clients from the
environment; :func:`storage_environment` makes those clients see ``storage.*`` while a run lasts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from indextts_core.config import StorageConfig


#: The configuration's S3 settings -> the environment variables boto3 (MLflow's artifact upload, Prefect's
#: result records) reads.  The key pair moves together: never one half from the config and one from the env.
_KEY_PAIR = (("access_key_id", "AWS_ACCESS_KEY_ID"), ("secret_access_key", "AWS_SECRET_ACCESS_KEY"))


def storage_env(storage: StorageConfig) -> dict[str, str]:
    """The AWS variables the configuration's ``storage.*`` settings give (key pair, region, endpoint).

    What the configuration says wins over the ambient environment for the run: a key pair given in
    ``storage.*`` is the one this run's S3 clients use, whatever ``$AWS_ACCESS_KEY_ID`` holds."""
    env: dict[str, str] = {}
    if storage.access_key_id and storage.secret_access_key:
        env |= {var: getattr(storage, name).get_secret_value() for name, var in _KEY_PAIR}
    if storage.region:
        env["AWS_DEFAULT_REGION"] = storage.region
    if storage.endpoint_url:
        env |= {"AWS_ENDPOINT_URL_S3": storage.endpoint_url, "MLFLOW_S3_ENDPOINT_URL": storage.endpoint_url}
    return env


@contextlib.contextmanager
def storage_environment(storage: StorageConfig) -> Iterator[dict[str, str]]:
    """While the block runs, every S3 client this process builds without explicit credentials (MLflow's artifact
    repository, the Prefect result block, boto3 in Dask workers started meanwhile) sees the configuration's
    ``storage.*`` credentials, region and endpoint (:func:`storage_env`); afterwards the environment is as it
    was.  Yields the names it set (never their values in a log)."""
    added = storage_env(storage)
    before = {var: os.environ.get(var) for var in added}
    os.environ.update(added)
    _forget_boto3_default_session(added)
    try:
        yield added
    finally:
        for var, value in before.items():
            if os.environ.get(var) != added[var]:
                continue  # changed by someone else meanwhile: theirs
            if value is None:
                del os.environ[var]
            else:
                os.environ[var] = value
        _forget_boto3_default_session(added)


def _forget_boto3_default_session(changed: Mapping[str, str]) -> None:
    """boto3's module-level session resolves credentials once and keeps them: when the variables change, drop
    it, so the next ``boto3.client(...)`` (MLflow's, Prefect's) reads the environment as it is now."""
    import sys

    boto3 = sys.modules.get("boto3")
    if changed and boto3 is not None:
        boto3.DEFAULT_SESSION = None
