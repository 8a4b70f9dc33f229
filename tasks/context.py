"""What every task needs to know about the run it belongs to, besides the configuration."""

from __future__ import annotations

from pydantic import BaseModel

from tasks.tracking import TrackingRef


class RunContext(BaseModel):
    """Run-level context passed to every task; never part of a cache key."""

    flow_run_id: str | None = None
    tracking: TrackingRef | None = None
