"""Print the fault tier's results as the markdown table of docs/guarantees.md.

Usage: python -m tests.faults.report [REPORT.jsonl]
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


def table(path: Path) -> str:
    rows = [
        "| scenario | published | confirmed | failed / unknown | lost | duplicated | "
        "unexpected | figures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    latest: dict[str, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        latest[entry["scenario"]] = entry
    for name, e in latest.items():
        extra = e["extra"]
        assert isinstance(extra, dict)
        figures = ", ".join(f"{k}={extra[k]}" for k in FIGURES if k in extra)
        rows.append(
            f"| {name} | {e['published']} | {e['confirmed']} | {e['failed']} / "
            f"{e['unknown']} | {e['lost']} | {e['duplicated']} | {e['unexpected']} | "
            f"{figures} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else REPORT))
