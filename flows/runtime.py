"""What a flow knows about its own Prefect run: ids for tags, and a name that says what ran."""

from __future__ import annotations

import logging

from prefect.client.orchestration import get_client
from prefect.runtime import deployment, flow_run

log = logging.getLogger(__name__)


def prefect_tags(flow_name: str) -> dict[str, str]:
    """MLflow tags that lead back to the Prefect flow run."""
    return {
        "bhm.flow": flow_name,
        "prefect.flow_run_id": str(flow_run.id or ""),
        "prefect.flow_run_name": str(flow_run.name or ""),
        "prefect.deployment": str(deployment.name or "none"),
    }


def rename_flow_run(name: str) -> None:
    """Rename the current flow run (once the data says what ran); a failure is logged, not raised."""
    run_id = flow_run.id
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name)
    except Exception as err:  # a cosmetic update must never fail the nightly run
        log.warning("could not rename flow run %s to %r: %s", run_id, name, err)
