#!/usr/bin/env bash
# A real single-node Slurm cluster for tests and laptops (Debian/Ubuntu, root,
# no systemd needed): munged, MariaDB (unix socket only), slurmdbd, slurmctld,
# slurmd.  Real clusters already have Slurm: do not use this there.
#
#   slurm/local-cluster.sh start    install missing apt packages, write the
#                                   configs, start the daemons, wait for the node
#   slurm/local-cluster.sh stop     stop the daemons by their pid files
#   slurm/local-cluster.sh status   daemons, node and partition state
#   slurm/local-cluster.sh restart
#
# Idempotent: `start` on a running cluster only checks it; `stop` on a stopped
# one does nothing.  Daemons are stopped by pid file, never by name.
#
# Environment:
#   LOCAL_SLURM_STATE   state dir (logs, spool, pid files)  [/var/lib/local-slurm]
#   LOCAL_SLURM_CPUS    CPUs advertised by the node          [from `slurmd -C`]
#   LOCAL_SLURM_FORCE=1 overwrite an /etc/slurm/slurm.conf this script did not write
set -euo pipefail

STATE=${LOCAL_SLURM_STATE:-/var/lib/local-slurm}
ETC=/etc/slurm
MARK="# written by benchmark slurm/local-cluster.sh"
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
DB_SOCK=/run/mysqld/mysqld.sock
DB_PID=/run/mysqld/mysqld.pid
MUNGE_PID=/run/munge/munged.pid
DBD_PID=$STATE/run/slurmdbd.pid
CTLD_PID=$STATE/run/slurmctld.pid
SLURMD_PID=$STATE/run/slurmd.pid

log() { echo "[local-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

alive() {  # alive PIDFILE -> 0 when the pid in the file is a running process
  [ -s "$1" ] || return 1
  local pid; pid=$(tr -dc '0-9' < "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  local i
  for ((i = 0; i < t * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${t}s waiting for $what (logs in $STATE/log)"
}

install_packages() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # package scripts try to start services; without an init system that fails harmlessly
  if ! apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >"/tmp/local-slurm-apt.log" 2>&1; then
    apt-get update </dev/null >>"/tmp/local-slurm-apt.log" 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >>"/tmp/local-slurm-apt.log" 2>&1 \
      || die "apt-get install failed, see /tmp/local-slurm-apt.log"
  fi
}

write_configs() {
  if [ -f "$ETC/slurm.conf" ] && ! grep -qF "$MARK" "$ETC/slurm.conf" && [ "${LOCAL_SLURM_FORCE:-0}" != 1 ]; then
    die "$ETC/slurm.conf exists and was not written by this script (set LOCAL_SLURM_FORCE=1 to overwrite)"
  fi
  mkdir -p "$ETC" "$STATE"/{run,log,ctld,spool}
  local host node cpus mem
  host=$(hostname -s)
  node=$(slurmd -C | head -n 1)           # NodeName=... CPUs=... RealMemory=...
  cpus=${LOCAL_SLURM_CPUS:-}
  if [ -n "$cpus" ]; then
    node=$(echo "$node" | sed -E "s/CPUs=[0-9]+/CPUs=$cpus/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g")
  fi
  # leave a little memory to the OS so --mem requests are honest
  mem=$(echo "$node" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
  node=$(echo "$node" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem * 9 / 10))/")
  cat > "$ETC/slurm.conf.new" <<EOF
$MARK
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobRequeue=1
ReturnToService=2
MinJobAge=600
MaxArraySize=1001
MaxJobCount=20000
KillWait=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$ETC/slurm.conf.new" "$ETC/slurm.conf"
  cat > "$ETC/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DBD_PID
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=local-slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"
}

start_munge() {
  alive "$MUNGE_PID" && return 0
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  rm -f "$MUNGE_PID"
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" --force
  wait_for 10 munged munge -n
}

start_mariadb() {
  if ! alive "$DB_PID"; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
      log "initialising MariaDB data directory"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1
    fi
    rm -f "$DB_PID"
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$DB_SOCK" \
      --pid-file="$DB_PID" --skip-networking --log-error="$STATE/log/mariadb.log" \
      </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --socket="$DB_SOCK" -e 'SELECT 1'
  fi
  mariadb --socket="$DB_SOCK" <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'local-slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {
  if ! alive "$DBD_PID"; then
    rm -f "$DBD_PID"; /usr/sbin/slurmdbd
    wait_for 30 slurmdbd sacctmgr -i show cluster
  fi
  if ! alive "$CTLD_PID"; then
    rm -f "$CTLD_PID"; /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
  fi
  if ! alive "$SLURMD_PID"; then
    rm -f "$SLURMD_PID"; /usr/sbin/slurmd
  fi
  # the cluster row appears in the accounting DB once slurmctld registered
  wait_for 30 "cluster registration" bash -c "sacctmgr -n -P show cluster format=cluster | grep -qx local"
  local host; host=$(hostname -s)
  wait_for 30 "node $host to be idle" bash -c "sinfo -h -n $host -o %t | grep -Eq '^(idle|mix|alloc)'"
}

stop_one() {  # stop_one NAME PIDFILE
  local name=$1 pf=$2 pid i
  if ! alive "$pf"; then rm -f "$pf"; return 0; fi
  pid=$(tr -dc '0-9' < "$pf")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30s, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pf"
}

cmd_start() {
  need_root
  install_packages
  write_configs
  start_munge
  start_mariadb
  start_slurm
  log "cluster up: $(sinfo -h -o '%P %D nodes %c cpus %m MB %t')"
}

cmd_stop() {
  need_root
  stop_one slurmd "$SLURMD_PID"
  stop_one slurmctld "$CTLD_PID"
  stop_one slurmdbd "$DBD_PID"
  stop_one mariadbd "$DB_PID"
  stop_one munged "$MUNGE_PID"
}

cmd_status() {
  local rc=0 n pf
  for n in munged:$MUNGE_PID mariadbd:$DB_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    pf=${n#*:}
    if alive "$pf"; then echo "${n%%:*}: running (pid $(tr -dc '0-9' < "$pf"))"; else echo "${n%%:*}: stopped"; rc=3; fi
  done
  if [ $rc = 0 ]; then sinfo -o '%P %a %D %t %c %m' || rc=3; fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
