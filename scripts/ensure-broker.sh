#!/usr/bin/env bash
# Make sure a RabbitMQ answers on 127.0.0.1:5672 (AMQP) and 127.0.0.1:15672 (management),
# with the management and consistent-hash plugins enabled.
#
# - already answering: only checks the plugins;
# - installed but down: starts it with `rabbitmq-server -detached`;
# - not installed: `apt-get install -y rabbitmq-server` (needs root), then starts it.
# Waits at most BROKER_WAIT seconds (default 120) for both ports. Stops nothing.
set -euo pipefail

HOST=127.0.0.1
WAIT=${BROKER_WAIT:-120}
PLUGINS=(rabbitmq_management rabbitmq_consistent_hash_exchange)

say() { echo "ensure-broker: $*" >&2; }

amqp_up() { (exec 3<>"/dev/tcp/$HOST/5672") 2>/dev/null; }
management_up() {
    # python3 rather than curl: the virtualenv needs python3 anyway; curl may be absent.
    python3 - "$HOST" <<'PY' 2>/dev/null
import base64, sys, urllib.request
request = urllib.request.Request(f"http://{sys.argv[1]}:15672/api/overview")
request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
urllib.request.urlopen(request, timeout=5).read()
PY
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_server() {
    say "rabbitmq-server is not installed: installing it with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    # The Debian package may start a node itself; we start our own below when it did not.
}

configure_local_node() {
    # A node name and listeners on the loopback, so the broker works without a resolvable
    # hostname and is not reachable from outside. Existing configuration is left alone.
    as_root mkdir -p /etc/rabbitmq
    if [ ! -s /etc/rabbitmq/rabbitmq-env.conf ]; then
        printf 'NODENAME=rabbit@localhost\nERL_EPMD_ADDRESS=127.0.0.1\n' \
            | as_root tee /etc/rabbitmq/rabbitmq-env.conf >/dev/null
    fi
    if [ ! -s /etc/rabbitmq/rabbitmq.conf ]; then
        printf 'listeners.tcp.local = 127.0.0.1:5672\nmanagement.tcp.ip = 127.0.0.1\n' \
            | as_root tee /etc/rabbitmq/rabbitmq.conf >/dev/null
    fi
}

enable_plugins() {
    # --offline writes enabled_plugins without a running node; a running node is told online.
    if amqp_up; then
        as_root rabbitmq-plugins enable "${PLUGINS[@]}" >/dev/null
    else
        as_root rabbitmq-plugins enable --offline "${PLUGINS[@]}" >/dev/null
    fi
}

clear_stale_alarm() {
    # The memory-alarm test (tests/integration/amqp/test_publish.py) sets the watermark to
    # 1e-7 and restores 0.4 when it ends; a run killed in between leaves the broker
    # blocking every publisher. Only a watermark that low is touched.
    local mark
    mark=$(as_root rabbitmqctl eval 'vm_memory_monitor:get_vm_memory_high_watermark().' 2>/dev/null) || return 0
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.001 else 1)' "$mark" 2>/dev/null; then
        as_root rabbitmqctl set_vm_memory_high_watermark 0.4 >/dev/null
        say "memory watermark was $mark (left by a killed test run): set back to 0.4"
    fi
}

wait_until_up() {
    local deadline=$((SECONDS + WAIT))
    until amqp_up && management_up; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "RabbitMQ did not answer on $HOST:5672 and :15672 within ${WAIT}s"
            say "look at /var/log/rabbitmq/ for the reason"
            exit 1
        fi
        sleep 1
    done
}

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    install_server
fi
export PATH="$PATH:/usr/sbin"

if amqp_up; then
    enable_plugins
else
    configure_local_node
    enable_plugins
    if ! amqp_up; then
        say "starting rabbitmq-server"
        as_root rabbitmq-server -detached
    fi
fi
wait_until_up
clear_stale_alarm
say "RabbitMQ answers on $HOST:5672 (AMQP) and $HOST:15672 (management)"
