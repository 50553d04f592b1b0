#!/usr/bin/env bash
# The partition tier (tests/faults/test_network_partitions.py) needs root, network namespaces and
# iproute2 (`ip`, `tc`). As root, installs iproute2 with apt-get when it is missing; then
# says in one line whether the tier can run (the tier itself skips, with the reason, when
# it cannot). Never fails: a machine without namespaces runs the rest of the suite.
set -uo pipefail

say() { echo "partitions: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "not root: the partition tier will be skipped"
    exit 0
fi
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
    say "iproute2 missing: installing it with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; } \
        >/dev/null 2>&1 || say "apt-get install iproute2 failed"
fi
if ! command -v ip >/dev/null 2>&1; then
    say "no \`ip\` command: the partition tier will be skipped"
    exit 0
fi
if ip netns add rfp-check 2>/dev/null; then
    if ip netns exec rfp-check tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
        say "network namespaces and tc netem work"
    else
        say "network namespaces work; tc netem does not (kernel without sch_netem):" \
            "delay and loss come from tests/faults/lossy.py"
    fi
    ip netns del rfp-check
else
    say "cannot create a network namespace: the partition tier will be skipped"
fi
exit 0
