#!/usr/bin/env bash
# The demo: validate the example topologies, declare them on the local broker (twice, to
# show that declaring is idempotent) and draw them. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

RABBITFLOW="${RABBITFLOW:-.venv/bin/rabbitflow}"
export RABBITFLOW_URL="${RABBITFLOW_URL:-amqp://guest:guest@127.0.0.1:5672/}"
TOPOLOGIES=(topologies/orders.yaml topologies/media.yaml topologies/rpc.yaml)
OUT=build/demo
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

step "validate: every file is checked, nothing connects"
"$RABBITFLOW" validate "${TOPOLOGIES[@]}"

step "declare (first run creates, later runs find everything there)"
"$RABBITFLOW" declare "${TOPOLOGIES[@]}" | tee "$OUT/declare-1.txt" | awk '{print $1, $2}' | sort | uniq -c

step "declare again: idempotent"
"$RABBITFLOW" declare "${TOPOLOGIES[@]}" | awk '{print $1, $2}' | sort | uniq -c

step "graph: mermaid (paste into GitHub markdown) and dot"
for file in "${TOPOLOGIES[@]}"; do
    name=$(basename "$file" .yaml)
    "$RABBITFLOW" graph "$file" -o "$OUT/$name.mmd"
    "$RABBITFLOW" graph "$file" --format dot -o "$OUT/$name.dot"
    echo "$OUT/$name.mmd  $OUT/$name.dot"
done
if command -v dot >/dev/null 2>&1; then
    for file in "$OUT"/*.dot; do dot -Tsvg "$file" -o "${file%.dot}.svg"; done
    echo "SVG drawings: $OUT/*.svg"
fi

step "the order flow, as mermaid"
cat "$OUT/orders.mmd"

# The order services at work: retries through delay queues, dead letters with errors.
.venv/bin/python scripts/demo.py

# Event sourcing: a projection rebuilt from a stream, restarted, and a replay.
.venv/bin/python scripts/demo_streams.py
