#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on loopback, beside the machine's own MariaDB (which it never touches),
# for the cluster tests and for trying trilio-dms on Galera by hand.
#
#   galera.sh start            bring the cluster up (idempotent); prints the three SQL ports
#   galera.sh stop             stop the nodes cleanly (3, 2, 1) so node 1 can bootstrap next time
#   galera.sh destroy          stop and delete the data
#   galera.sh status           one line per node: running or not, cluster size it sees
#   galera.sh kill N           SIGKILL node N (1..3)
#   galera.sh restart N        start node N again after a kill or stop (recovers its position first)
#
# Nodes listen on 127.0.0.1:3307/3308/3309 (SQL). A TCP user dms@127.0.0.1 (password "dms") with all
# privileges is created; root authenticates only by the node's own unix socket.
# DMS_GALERA_DIR (default /tmp/trilio-dms-galera) holds one directory per node.
set -euo pipefail

DIR=${DMS_GALERA_DIR:-/tmp/trilio-dms-galera}
SQL_PORTS=(3307 3308 3309)
GCOMM_PORTS=(4567 4577 4587)
IST_PORTS=(4568 4578 4588)
SST_PORTS=(4444 4454 4464)
WAIT=${DMS_GALERA_WAIT:-120}

node_dir() { echo "$DIR/node$1"; }
sock() { echo "$(node_dir "$1")/mysqld.sock"; }
pidfile() { echo "$(node_dir "$1")/mysqld.pid"; }
# Our own record of the node's process: mariadbd writes its pid-file only once it has joined.
ownpid() { echo "$(node_dir "$1")/node.pid"; }

pid_of() {
  local f; f=$(ownpid "$1")
  [ -f "$f" ] || return 1
  local p; p=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

client() { # node, then mariadb arguments
  local n=$1; shift
  mariadb --no-defaults --protocol=socket -S "$(sock "$n")" -u root -N -B "$@"
}

cluster_size() { client "$1" -e "SHOW STATUS LIKE 'wsrep_cluster_size'" 2>/dev/null | awk '{print $2}'; }
ready() { [ "$(client "$1" -e "SHOW STATUS LIKE 'wsrep_ready'" 2>/dev/null | awk '{print $2}')" = "ON" ]; }

write_config() {
  local n=$1 i=$(($1 - 1)) d; d=$(node_dir "$1")
  mkdir -p "$d/data"
  cat >"$d/my.cnf" <<EOF
[mariadbd]
user=mysql
datadir=$d/data
socket=$(sock "$n")
pid-file=$(pidfile "$n")
log-error=$d/error.log
port=${SQL_PORTS[$i]}
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=64M
max_connections=500
binlog_format=ROW
innodb_autoinc_lock_mode=2
default_storage_engine=InnoDB
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=trilio-dms-test
wsrep_cluster_address=gcomm://127.0.0.1:${GCOMM_PORTS[0]},127.0.0.1:${GCOMM_PORTS[1]},127.0.0.1:${GCOMM_PORTS[2]}
wsrep_node_name=node$n
wsrep_node_address=127.0.0.1:${GCOMM_PORTS[$i]}
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:${SST_PORTS[$i]}
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:${GCOMM_PORTS[$i]};ist.recv_addr=127.0.0.1:${IST_PORTS[$i]};gcache.size=64M"
EOF
  chown -R mysql:mysql "$d"
}

install_node() {
  local d; d=$(node_dir "$1")
  [ -d "$d/data/mysql" ] && return 0
  write_config "$1"
  mariadb-install-db --no-defaults --user=mysql --datadir="$d/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$d/install.log" 2>&1
  chown -R mysql:mysql "$d"
}

await_ready() { # node
  local n=$1
  for _ in $(seq 1 "$WAIT"); do
    if ready "$n"; then return 0; fi
    if ! pid_of "$n" >/dev/null; then
      echo "galera: node $n exited while starting; see $(node_dir "$n")/error.log" >&2
      tail -20 "$(node_dir "$n")/error.log" >&2 || true
      return 1
    fi
    sleep 1
  done
  echo "galera: node $n not ready after ${WAIT}s; see $(node_dir "$n")/error.log" >&2
  return 1
}

# After a SIGKILL the node's grastate says seqno -1: recover its position so it rejoins by IST, not SST.
recovered_position() {
  local n=$1 d; d=$(node_dir "$1")
  grep -q 'seqno: *-1' "$d/data/grastate.dat" 2>/dev/null || return 0
  mariadbd --defaults-file="$d/my.cnf" --wsrep-recover --log-error="$d/recover.log" >/dev/null 2>&1 || true
  sed -n 's/.*Recovered position: *\([^ ]*\).*/\1/p' "$d/recover.log" | tail -1
}

start_node() { # node [extra mariadbd args...]
  local n=$1; shift
  pid_of "$n" >/dev/null && return 0
  write_config "$n"
  local pos; pos=$(recovered_position "$n")
  local extra=("$@")
  [ -n "$pos" ] && extra+=("--wsrep_start_position=$pos")
  setsid /usr/sbin/mariadbd --defaults-file="$(node_dir "$n")/my.cnf" "${extra[@]}" </dev/null >/dev/null 2>&1 &
  echo $! >"$(ownpid "$n")"
  await_ready "$n"
}

any_running() { for n in 1 2 3; do pid_of "$n" >/dev/null && return 0; done; return 1; }

bootstrap_node() {
  # The node to bootstrap from: one marked safe_to_bootstrap, else node 1.
  for n in 1 2 3; do
    grep -q 'safe_to_bootstrap: *1' "$(node_dir "$n")/data/grastate.dat" 2>/dev/null && { echo "$n"; return; }
  done
  echo 1
}

cmd_start() {
  mkdir -p "$DIR"
  for n in 1 2 3; do install_node "$n"; done
  if ! any_running; then
    local b; b=$(bootstrap_node)
    sed -i 's/safe_to_bootstrap: *0/safe_to_bootstrap: 1/' "$(node_dir "$b")/data/grastate.dat" 2>/dev/null || true
    start_node "$b" --wsrep-new-cluster
  fi
  for n in 1 2 3; do start_node "$n"; done
  local first; for n in 1 2 3; do pid_of "$n" >/dev/null && { first=$n; break; }; done
  client "$first" -e "CREATE USER IF NOT EXISTS 'dms'@'127.0.0.1' IDENTIFIED BY 'dms';
    GRANT ALL PRIVILEGES ON *.* TO 'dms'@'127.0.0.1' WITH GRANT OPTION;"
  for n in 1 2 3; do
    for _ in $(seq 1 "$WAIT"); do [ "$(cluster_size "$n")" = 3 ] && break; sleep 1; done
  done
  echo "galera: up on 127.0.0.1:${SQL_PORTS[0]},127.0.0.1:${SQL_PORTS[1]},127.0.0.1:${SQL_PORTS[2]} (user dms, password dms)"
}

stop_node() {
  local n=$1 p
  p=$(pid_of "$n") || return 0
  kill -TERM "$p"
  for _ in $(seq 1 "$WAIT"); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.5; done
  echo "galera: node $n did not stop; killing it" >&2
  kill -KILL "$p" 2>/dev/null || true
}

cmd_stop() { for n in 3 2 1; do stop_node "$n"; done; }

cmd_status() {
  for n in 1 2 3; do
    if p=$(pid_of "$n"); then echo "node$n 127.0.0.1:${SQL_PORTS[$((n - 1))]} pid $p cluster_size $(cluster_size "$n")"
    else echo "node$n 127.0.0.1:${SQL_PORTS[$((n - 1))]} down"; fi
  done
}

node_arg() {
  case "${1:-}" in 1 | 2 | 3) echo "$1" ;; *) echo "galera: expected a node number 1..3, got '${1:-}'" >&2; exit 2 ;; esac
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  destroy) cmd_stop; rm -rf "$DIR" ;;
  status) cmd_status ;;
  kill) n=$(node_arg "${2:-}"); p=$(pid_of "$n") && kill -KILL "$p" && while kill -0 "$p" 2>/dev/null; do sleep 0.1; done ;;
  restart) n=$(node_arg "${2:-}"); start_node "$n" ;;
  *) echo "usage: $0 start|stop|destroy|status|kill N|restart N" >&2; exit 2 ;;
esac
