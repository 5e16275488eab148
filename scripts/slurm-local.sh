#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, as root, without systemd.
#
#   scripts/slurm-local.sh install  install the Debian packages that are missing (nothing else)
#   scripts/slurm-local.sh start    install what is missing, write the configs, start the daemons,
#                                   wait until the node is idle and accounting answers
#   scripts/slurm-local.sh stop     cancel the cluster's jobs, stop the daemons by their PID files
#   scripts/slurm-local.sh status   each daemon's PID and `sinfo`
#   scripts/slurm-local.sh restart  stop, then start
#
# Daemons, in start order: munged -> mariadbd (accounting store, unix socket only) -> slurmdbd
# -> slurmctld -> slurmd. Each is stopped through the PID file this script gave it, never by
# name, so daemons of other users or other clusters on the machine are left alone. Both commands
# are idempotent. Details and every path: docs/slurm.md.
#
# Environment: STE_SLURM_STATE (state folder, default /var/lib/ste-slurm),
# STE_SLURM_TIMEOUT (seconds to wait for readiness, default 120),
# STE_SLURM_PARTITION (partition name, default debug).
set -euo pipefail

STATE=${STE_SLURM_STATE:-/var/lib/ste-slurm}
TIMEOUT=${STE_SLURM_TIMEOUT:-120}
PARTITION=${STE_SLURM_PARTITION:-debug}
RUN=$STATE/run               # PID files and the MariaDB socket
DB_DIR=$STATE/mysql          # a private MariaDB datadir (the system one is left untouched)
DB_SOCK=$RUN/mysqld.sock
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
CONF_CHANGED=0
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin mariadb-server)

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"; }

# --- PID files ------------------------------------------------------------------------------

# pid_alive FILE COMM: true when FILE names a live process whose command name is COMM. The name
# check guards against a stale PID file whose number the kernel has since given to another process.
pid_alive() {
  local file=$1 comm=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$comm" ]
}

# stop_pidfile FILE COMM: SIGTERM, wait up to 30 s, then SIGKILL; remove the PID file.
stop_pidfile() {
  local file=$1 comm=$2 pid
  if ! pid_alive "$file" "$comm"; then
    rm -f "$file"
    return 0
  fi
  pid=$(tr -dc '0-9' <"$file")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  if [ -d "/proc/$pid" ]; then
    log "$comm ($pid) ignored SIGTERM for 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  log "stopped $comm ($pid)"
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${seconds}s waiting for $what"
      show_logs
      exit 1
    fi
    sleep 0.2
  done
}

show_logs() {
  local f
  for f in /var/log/munge/munged.log "$LOG_DIR/mariadb.log" "$LOG_DIR/slurmdbd.log" \
    "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
    [ -f "$f" ] || continue
    printf '\n===== last lines of %s =====\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}

# --- set-up -----------------------------------------------------------------------------------

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d (where present) keeps the packages' init scripts from starting daemons.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_hostname() {
  HOST=$(hostname -s)
  if ! getent hosts "$HOST" >/dev/null; then
    log "adding '127.0.0.1 $HOST' to /etc/hosts (the short host name must resolve)"
    printf '127.0.0.1 %s\n' "$HOST" >>/etc/hosts
  fi
}

# write_if_changed FILE MODE: stdin becomes FILE (atomically) unless it already holds the same text.
write_if_changed() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
    CONF_CHANGED=1
  fi
}

write_configs() {
  local node
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN" /var/spool/slurmctld /var/spool/slurmd
  chmod 755 "$STATE" "$RUN"
  # CPUs, sockets, cores and memory exactly as slurmd itself will report them.
  node=$(slurmd -C | head -n 1)
  [[ $node == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node"
  write_if_changed "$CONF_DIR/slurm.conf" 644 <<EOF
# Written by scripts/slurm-local.sh (a single-node test cluster); see docs/slurm.md.
ClusterName=ste
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s; 5 is the minimum).
AuthInfo=cred_expire=5
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups here: track processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
ReturnToService=2
JobRequeue=1
# Short timeouts so that tests see state changes quickly.
SlurmctldTimeout=10
SlurmdTimeout=30
MinJobAge=60
KillWait=5
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ ! -s "$STATE/dbpass" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/dbpass")
  fi
  # slurmdbd refuses a config file that others can read (it holds the database password).
  write_if_changed "$CONF_DIR/slurmdbd.conf" 600 <<EOF
# Written by scripts/slurm-local.sh; see docs/slurm.md.
AuthType=auth/munge
DbdHost=$HOST
DbdPort=6819
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(cat "$STATE/dbpass")
StorageLoc=slurm_acct_db
EOF
}

# --- daemons ----------------------------------------------------------------------------------

start_munge() {
  if pid_alive "$MUNGE_PID" munged; then
    log "munged already running ($(cat "$MUNGE_PID"))"
    return 0
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 600 /etc/munge/munge.key
  chmod 755 /run/munge
  runuser -u munge -- munged </dev/null
  wait_for 20 munged sh -c 'munge -n | unmunge'
  log "munged started ($(cat "$MUNGE_PID"))"
}

# shellcheck disable=SC2120  # called with arguments through wait_for
db() { mariadb --no-defaults --socket="$DB_SOCK" -u root "$@"; }

start_mariadb() {
  if pid_alive "$RUN/mysqld.pid" mariadbd; then
    log "mariadbd already running ($(cat "$RUN/mysqld.pid"))"
  else
    if [ ! -d "$DB_DIR/mysql" ]; then
      log "initialising the accounting database in $DB_DIR"
      rm -rf "$DB_DIR"
      mkdir -p "$DB_DIR"
      chown mysql:mysql "$DB_DIR"
      mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG_DIR/mariadb-install.log" 2>&1 ||
        { tail -n 30 "$LOG_DIR/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    chown mysql:mysql "$RUN"
    # --no-defaults: ignore /etc/mysql (the system server's socket and datadir);
    # --skip-networking: reachable through the unix socket only.
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCK" \
      --pid-file="$RUN/mysqld.pid" --skip-networking --log-error="$LOG_DIR/mariadb.log" \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >>"$LOG_DIR/mariadb.log" 2>&1 &
    wait_for 60 mariadbd db -e 'SELECT 1'
    log "mariadbd started ($(cat "$RUN/mysqld.pid"))"
  fi
  local pass
  pass=$(cat "$STATE/dbpass")
  # shellcheck disable=SC2119
  db <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm_daemon() {
  local name=$1 pidfile=$2
  shift 2
  if pid_alive "$pidfile" "$name"; then
    log "$name already running ($(cat "$pidfile"))"
    return 0
  fi
  # The daemon forks, writes its PID file and detaches.
  "$name" "$@" </dev/null >>"$LOG_DIR/$name.out" 2>&1 ||
    { show_logs; die "$name failed to start"; }
  wait_for 20 "$name's PID file" pid_alive "$pidfile" "$name"
  log "$name started ($(cat "$pidfile"))"
}

node_idle() { sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)'; }

start() {
  local t0=$SECONDS
  need_root
  install_packages
  ensure_hostname
  WAS_RUNNING=0
  if pid_alive "$RUN/slurmctld.pid" slurmctld; then WAS_RUNNING=1; fi
  write_configs
  start_munge
  start_mariadb
  # slurmdbd finds the database through the MariaDB client library's default socket variable.
  MYSQL_UNIX_PORT=$DB_SOCK start_slurm_daemon slurmdbd "$RUN/slurmdbd.pid"
  wait_for "$TIMEOUT" "slurmdbd to answer sacctmgr" sacctmgr -n -P list cluster
  start_slurm_daemon slurmctld "$RUN/slurmctld.pid"
  wait_for "$TIMEOUT" "slurmctld to answer" scontrol ping
  start_slurm_daemon slurmd "$RUN/slurmd.pid"
  if [ "$CONF_CHANGED" = 1 ] && [ "$WAS_RUNNING" = 1 ]; then
    log "slurm.conf changed while the cluster ran: scontrol reconfigure"
    scontrol reconfigure
  fi
  wait_for "$TIMEOUT" "node $HOST to be idle" node_idle
  wait_for "$TIMEOUT" "sacct" sacct -n -X
  wait_for "$TIMEOUT" "cluster 'ste' in the accounting database" \
    sh -c 'sacctmgr -n -P list cluster format=cluster | grep -qx ste'
  log "cluster up in $((SECONDS - t0)) s: partition '$PARTITION', node $HOST"
  sinfo >&2
}

stop() {
  need_root
  # Jobs' processes outlive slurmd (they run under slurmstepd): end them first.
  if pid_alive "$RUN/slurmctld.pid" slurmctld && command -v squeue >/dev/null; then
    local jobs
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      local deadline=$((SECONDS + 20))
      while [ -n "$(squeue -h -t running,completing -o '%A' 2>/dev/null)" ] &&
        [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.5
      done
    fi
  fi
  # Each daemon takes about 2 s to exit; stop those that do not depend on each other together.
  # slurmdbd goes after slurmctld (which flushes job records to it), the database and munge last.
  stop_pidfile "$RUN/slurmd.pid" slurmd &
  stop_pidfile "$RUN/slurmctld.pid" slurmctld &
  wait
  stop_pidfile "$RUN/slurmdbd.pid" slurmdbd
  stop_pidfile "$RUN/mysqld.pid" mariadbd &
  stop_pidfile "$MUNGE_PID" munged &
  wait
  log "stopped"
}

status() {
  local rc=0 name file
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    case $name in
      munged) file=$MUNGE_PID ;;
      mariadbd) file=$RUN/mysqld.pid ;;
      *) file=$RUN/$name.pid ;;
    esac
    if pid_alive "$file" "$name"; then
      printf '%-10s running (%s)\n' "$name" "$(tr -dc '0-9' <"$file")"
    else
      printf '%-10s stopped\n' "$name"
      rc=3
    fi
  done
  if [ "$rc" -eq 0 ]; then
    sinfo
  fi
  return "$rc"
}

case ${1:-} in
  install) need_root && install_packages ;;
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) status ;;
  logs) show_logs ;;
  *)
    echo "usage: $0 install|start|stop|restart|status|logs" >&2
    exit 2
    ;;
esac
