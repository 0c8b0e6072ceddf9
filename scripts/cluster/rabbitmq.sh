#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback, beside the machine's own node (rabbit@localhost, 5672), which it
# never touches (nor the shared epmd), for the cluster tests and for trying trilio-dms by hand.
#
#   rabbitmq.sh start          bring the cluster up (idempotent); prints the three AMQP URLs
#   rabbitmq.sh stop           stop the nodes (C, B, A)
#   rabbitmq.sh destroy        stop and delete the data
#   rabbitmq.sh status         one line per node
#   rabbitmq.sh stop-app N     stop RabbitMQ on node N (A|B|C) but keep its Erlang VM (as a node loss)
#   rabbitmq.sh start-app N    start it again; it rejoins the cluster
#   rabbitmq.sh kill N         SIGKILL node N's VM;   rabbitmq.sh restart N   start it again
#   rabbitmq.sh ctl N ARGS...  rabbitmqctl against node N
#
# Nodes dmsA/dmsB/dmsC@localhost, AMQP on 127.0.0.1:5682/5683/5684, user dms/dms (administrator, vhost /).
# DMS_RABBIT_DIR (default /tmp/trilio-dms-rabbitmq) holds one directory per node.
set -euo pipefail

DIR=${DMS_RABBIT_DIR:-/tmp/trilio-dms-rabbitmq}
SBIN=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin | sort -V | tail -1)
NODES=(A B C)
WAIT=${DMS_RABBIT_WAIT:-120}

index() { case "$1" in A) echo 0 ;; B) echo 1 ;; C) echo 2 ;; *) echo "rabbitmq: expected a node A|B|C, got '$1'" >&2; exit 2 ;; esac; }
amqp_port() { echo $((5682 + $(index "$1"))); }
dist_port() { echo $((25682 + $(index "$1"))); }
node_dir() { echo "$DIR/$1"; }

# The environment every rabbitmq-server / rabbitmqctl of node N runs with (never the machine's own).
node_env() {
  local n=$1 d; d=$(node_dir "$1")
  echo HOME="$DIR/home" \
    RABBITMQ_CONF_ENV_FILE="$DIR/empty-env.conf" \
    RABBITMQ_NODENAME="dms$n@localhost" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
    RABBITMQ_PID_FILE="$d/rabbitmq.pid" \
    RABBITMQ_CTL_DIST_PORT_MIN=35690 RABBITMQ_CTL_DIST_PORT_MAX=35710 \
    ERL_EPMD_ADDRESS=127.0.0.1
}

ctl() { # node, rabbitmqctl args
  local n=$1; shift
  env $(node_env "$n") ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$SBIN/rabbitmqctl" -n "dms$n@localhost" "$@"
}

prepare() {
  mkdir -p "$DIR/home"
  : >"$DIR/empty-env.conf"
  echo "[]." >"$DIR/enabled_plugins"
  if [ ! -f "$DIR/home/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DIR/home/.erlang.cookie"
    chmod 400 "$DIR/home/.erlang.cookie"
  fi
  for n in "${NODES[@]}"; do
    local d; d=$(node_dir "$n")
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
EOF
  done
}

# Our own beam processes, told apart from the machine's by RABBITMQ_NODENAME in their environment.
vm_pid() {
  local want="RABBITMQ_NODENAME=dms$1@localhost" p
  for p in $(pgrep -f beam.smp || true); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "$want" && { echo "$p"; return 0; }
  done
  return 1
}

running() { ctl "$1" -q eval 'rabbit:is_running().' 2>/dev/null | grep -q true; }

await() { # node, predicate
  for _ in $(seq 1 "$WAIT"); do "$2" "$1" && return 0; sleep 1; done
  echo "rabbitmq: node $1 not ready after ${WAIT}s; see $(node_dir "$1")/log" >&2
  return 1
}

start_vm() {
  local n=$1
  vm_pid "$n" >/dev/null && return 0
  env $(node_env "$n") ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    setsid "$SBIN/rabbitmq-server" </dev/null >"$(node_dir "$n")/log/console.log" 2>&1 &
}

members() { ctl "$1" -q eval 'io:format("~p", [length(rabbit_nodes:all_running())]).' 2>/dev/null | tr -dc '0-9'; }

cmd_start() {
  prepare
  for n in "${NODES[@]}"; do start_vm "$n"; done
  for n in "${NODES[@]}"; do await "$n" running; done
  for n in B C; do
    if ! ctl "$n" -q cluster_status --formatter json 2>/dev/null | grep -q '"dmsA@localhost"'; then
      ctl "$n" -q stop_app
      ctl "$n" -q join_cluster dmsA@localhost
      ctl "$n" -q start_app
    fi
  done
  ctl A -q add_user dms dms >/dev/null 2>&1 || true
  ctl A -q set_user_tags dms administrator
  ctl A -q set_permissions -p / dms '.*' '.*' '.*'
  for n in "${NODES[@]}"; do
    for _ in $(seq 1 "$WAIT"); do [ "$(members "$n")" = 3 ] && break; sleep 1; done
  done
  echo "rabbitmq: up on amqp://dms:dms@127.0.0.1:5682,amqp://dms:dms@127.0.0.1:5683,amqp://dms:dms@127.0.0.1:5684"
}

stop_node() {
  local n=$1 p
  p=$(vm_pid "$n") || return 0
  ctl "$n" -q stop >/dev/null 2>&1 || kill -TERM "$p"
  for _ in $(seq 1 "$WAIT"); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$p" 2>/dev/null || true
}

cmd_status() {
  for n in "${NODES[@]}"; do
    if p=$(vm_pid "$n"); then
      if running "$n"; then echo "dms$n 127.0.0.1:$(amqp_port "$n") pid $p running, sees $(members "$n") running"
      else echo "dms$n 127.0.0.1:$(amqp_port "$n") pid $p app stopped"; fi
    else echo "dms$n 127.0.0.1:$(amqp_port "$n") down"; fi
  done
}

case "${1:-}" in
  start) cmd_start ;;
  stop) for n in C B A; do stop_node "$n"; done ;;
  destroy) for n in C B A; do stop_node "$n"; done; rm -rf "$DIR" ;;
  status) cmd_status ;;
  stop-app) index "${2:-}" >/dev/null; ctl "$2" -q stop_app ;;
  start-app) index "${2:-}" >/dev/null; ctl "$2" -q start_app; await "$2" running ;;
  kill) index "${2:-}" >/dev/null; if p=$(vm_pid "$2"); then kill -KILL "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; fi ;;
  restart) index "${2:-}" >/dev/null; prepare; start_vm "$2"; await "$2" running ;;
  ctl) index "${2:-}" >/dev/null; n=$2; shift 2; ctl "$n" "$@" ;;
  *) echo "usage: $0 start|stop|destroy|status|stop-app N|start-app N|kill N|restart N|ctl N ARGS" >&2; exit 2 ;;
esac
