"""Reading a Job's outcome the way ``kubectl describe job`` reports it."""

from __future__ import annotations

from typing import Any


def job_state(job: dict[str, Any] | None) -> tuple[str, str]:
    """("succeeded" | "failed" | "running" | "absent", message) from a Job's status conditions."""
    if job is None:
        return "absent", ""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return "succeeded", c.get("message") or ""
        if c.get("type") == "Failed":
            reason, message = c.get("reason") or "Failed", c.get("message") or ""
            return "failed", f"{reason}: {message}" if message else reason
    return "running", ""
