"""Print the fault tier's results as the markdown table of docs/guarantees.md.

Usage: python -m tests.faults.report [--partitions] [REPORT.jsonl]

``--partitions``: only the partition tier's rows (scenarios named ``partition: ...``),
with its figures; without it, the other rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults.harness import REPORT

FIGURES = (
    "recovery_s",
    "recovery_max_s",
    "resumed_s",
    "reconnect_s",
    "worst_resume_s",
    "detected_s",
    "warning_after_s",
    "stop_s",
    "took_s",
    "longest_publish_s",
    "kills",
    "closes",
    "peak_rss_mb",
    "growth_mb",
    "bound_mb",
    "bound",
)
PARTITION_FIGURES = (
    "means",
    "old_leader",
    "new_leader",
    "cut_to_flowing_s",
    "failover_s",
    "flapped_s",
    "resumed_s",
    "stall_s",
    "all_up_within_s",
    "stuck_restarted",
    "worker_reconnects",
    "dup_bound",
    "raised",
    "longest_publish_s",
    "errors",
)


def table(path: Path, *, partitions: bool = False) -> str:
    rows = [
        "| scenario | published | confirmed | failed / unknown | lost | duplicated | "
        "unexpected | figures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    latest: dict[str, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        latest[entry["scenario"]] = entry
    keys = PARTITION_FIGURES if partitions else FIGURES
    for name, e in latest.items():
        if name.startswith("partition:") != partitions:
            continue
        extra = e["extra"]
        assert isinstance(extra, dict)
        figures = ", ".join(f"{k}={_figure(extra[k])}" for k in keys if k in extra)
        rows.append(
            f"| {name} | {e['published']} | {e['confirmed']} | {e['failed']} / "
            f"{e['unknown']} | {e['lost']} | {e['duplicated']} | {e['unexpected']} | "
            f"{figures} |"
        )
    return "\n".join(rows)


def _figure(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    return str(value)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--partitions"]
    print(table(Path(args[0]) if args else REPORT, partitions="--partitions" in sys.argv))
