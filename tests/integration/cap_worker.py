"""One Dagster run in its own process, for the cross-process CRM cap test.

``python -m tests.integration.cap_worker <go-file> details <fiche> [<fiche> …]`` materializes
``fiche_details`` for those fiche partitions; ``… sales <day> [<day> …]`` materializes
``sales_list`` for those days; ``… transcripts <fiche>`` materializes ``transcripts`` (the STT
provider named by the environment); ``… audit <fiche> <tracking id> <config id>`` materializes
``audit_step_results`` + ``audits`` for one audit request (the LLM named by the environment). Each worker imports everything, then waits for ``<go-file>`` so all
workers hit the CRM at the same moment. The CRM is the HTTP gateway named by the environment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    go, kind, *keys = argv
    from dagster import DagsterInstance, materialize

    from auditflow_dagster.assets.audits import audit_step_results, audits
    from auditflow_dagster.assets.fiches import fiche_details
    from auditflow_dagster.assets.sales import sales_list
    from auditflow_dagster.assets.transcripts import transcripts
    from auditflow_dagster.resources.crm import CrmResource
    from auditflow_dagster.resources.database import DatabaseResource
    from auditflow_dagster.resources.llm import LlmResource
    from auditflow_dagster.resources.stt import SttResource

    resources = {"crm": CrmResource.from_settings(), "db": DatabaseResource(), "stt": SttResource.from_settings(),
                 "llm": LlmResource.from_settings()}
    with DagsterInstance.ephemeral() as instance:
        if kind == "audit":  # keys = [fiche id, tracking id, config id]
            instance.add_dynamic_partitions("fiches", keys[:1])
            run_config = {"ops": {"audit_step_results": {"config": {
                "audit_config_ids": [int(keys[2])], "audit_tracking_ids": {keys[0]: keys[1]}, "trigger_source": "api"}}}}
            ok = materialize([audit_step_results, audits], partition_key=keys[0], instance=instance, resources=resources,
                             run_config=run_config).success
            return 0 if ok else 1
        if kind in ("details", "transcripts"):
            instance.add_dynamic_partitions("fiches", keys)
        deadline = time.monotonic() + 120
        while not Path(go).exists():
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.02)
        ok = True
        if kind == "transcripts":
            return 0 if materialize([transcripts], partition_key=keys[0], instance=instance, resources=resources).success else 1
        for key in keys if kind == "sales" else [None]:
            if kind == "sales":
                result = materialize([sales_list], partition_key=key, instance=instance, resources=resources)
            else:
                result = materialize(
                    [fiche_details],
                    instance=instance,
                    resources=resources,
                    partition_key=keys[0] if len(keys) == 1 else None,
                    tags=None if len(keys) == 1 else {
                        "dagster/asset_partition_range_start": keys[0],
                        "dagster/asset_partition_range_end": keys[-1],
                    },
                )
            ok = ok and result.success
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
