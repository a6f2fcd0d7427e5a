#!/usr/bin/env bash
# A real, local Slurm "cluster" for hpcseg's tests: munge + MariaDB + slurmdbd + slurmctld + three slurmd
# daemons (node1..node3, 36 CPUs / 240 GiB / 1 GPU each, as on the seed's HPC nodes) on this one machine.
# Debian 12 packages, root, no systemd. See docs/local-slurm.md.
#
#   scripts/local-slurm.sh up              install (if needed), configure, start; idempotent, fast when healthy
#   scripts/local-slurm.sh down            stop every daemon; idempotent
#   scripts/local-slurm.sh status          one line per daemon + sinfo; exit 0 only when healthy
#   scripts/local-slurm.sh stop-ctld       stop slurmctld only (fault tests: controller down)
#   scripts/local-slurm.sh start-ctld      start slurmctld again (keeps its saved state: jobs survive)
#   scripts/local-slurm.sh restart-ctld    both of the above
#   scripts/local-slurm.sh restart-slurmd [nodeN]   restart slurmd (all, or one); running tasks keep running
#
# Environment: HPCSEG_SLURM_DIR (state/spool/logs/pids, default /var/lib/hpcseg-slurm),
#              HPCSEG_SLURM_WAIT (seconds to wait for idle nodes, default 60).
set -uo pipefail

DIR=${HPCSEG_SLURM_DIR:-/var/lib/hpcseg-slurm}
WAIT=${HPCSEG_SLURM_WAIT:-60}
CLUSTER=hpcseg
NODES=(node1 node2 node3)
NODE_RANGE="node[1-3]"
PORT_RANGE="17001-17003"
CONF_DIR=/etc/slurm
SLURM_CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
GRES_CONF=$CONF_DIR/gres.conf
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=hpcseg-slurm-db
MUNGE_PID=/run/munge/munged.pid
MYSQL_PID=/run/mysqld/mysqld.pid
MYSQL_SOCK=/run/mysqld/mysqld.sock
LOG=$DIR/log
RUN=$DIR/run
HOST=$(hostname -s 2>/dev/null || hostname)
export SLURM_CONF

say()  { printf '%s\n' "$*" >&2; }
die()  { say "local-slurm: FAILED at step '$1': $2"; if [ -n "${3:-}" ] && [ -f "$3" ]; then say "--- last lines of $3:"; tail -n 25 "$3" >&2; fi; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# pid_alive PIDFILE COMM: the pid in PIDFILE is running and its command name is COMM
pid_alive() {
    local pf=$1 comm=$2 pid
    [ -s "$pf" ] || return 1
    pid=$(tr -dc '0-9' <"$pf")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$comm" ]
}

# stop_pids SECONDS PIDFILE:COMM...: TERM them all at once, wait up to SECONDS, then KILL what is left
stop_pids() {
    local secs=$1 item pf comm pid i left; shift
    local pids=() pfs=()
    for item in "$@"; do
        pf=${item%%:*} comm=${item##*:}
        if pid_alive "$pf" "$comm"; then
            pid=$(tr -dc '0-9' <"$pf"); kill -TERM "$pid" 2>/dev/null; pids+=("$pid")
        fi
        pfs+=("$pf")
    done
    for ((i = 0; i < secs * 10; i++)); do
        left=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; done
    [ "$left" = 1 ] && sleep 0.2
    rm -f "${pfs[@]}"
}
stop_pid() { stop_pids "${3:-20}" "$1:$2"; }

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds
wait_for() {
    local secs=$1 i; shift
    for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

# ---------------------------------------------------------------------------------------------- install
install_packages() {
    local missing=0 b
    for b in slurmctld slurmd slurmdbd munged mysqld_safe qsub qstat sacct sacctmgr; do have "$b" || missing=1; done
    [ "$missing" = 0 ] && return 0
    say "local-slurm: installing Debian packages (slurm-wlm slurm-wlm-torque slurmdbd munge mariadb-server)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$LOG/apt.log" 2>&1 || die install "apt-get update failed" "$LOG/apt.log"
    apt-get install -y -qq slurm-wlm slurm-wlm-torque slurmdbd munge mariadb-server >>"$LOG/apt.log" 2>&1 \
        || die install "apt-get install failed" "$LOG/apt.log"
}

# ---------------------------------------------------------------------------------------------- config
# The virtual nodes share this machine's cores; a task's fair share is nproc / nodes (at least 1).
# TaskProlog output lines "export NAME=value" enter the task's environment; hpcseg's trainer caps its
# threads at HPCSEG_MAX_THREADS.
gen_task_prolog() {
    local share=$(( $(nproc) / ${#NODES[@]} ))
    (( share < 1 )) && share=1
    printf '#!/bin/sh\n# Written by hpcseg scripts/local-slurm.sh: real cores per virtual node.\necho "export HPCSEG_MAX_THREADS=%s"\n' "$share"
}

gen_slurm_conf() {
    cat <<EOF
# Written by hpcseg scripts/local-slurm.sh -- local test cluster, regenerated on 'up'.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmdSpoolDir=$DIR/spool/%n
StateSaveLocation=$DIR/state
SlurmctldDebug=info
SlurmdDebug=info
# no cgroup plugins inside this VM/container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs that ask for no memory get 4 GiB per CPU, not the whole node
DefMemPerCPU=4096
MpiDefault=none
ReturnToService=2
# trust the node lines below, not the 2 real cores / RAM of this machine
SlurmdParameters=config_overrides
# ...but tell each task the real share of cores, or three 36-CPU tasks spin 6 threads on 2 cores
TaskProlog=$DIR/task-prolog.sh
GresTypes=gpu
# accounting through slurmdbd, so sacct works and finished jobs are remembered
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
MailProg=/bin/true
# snappy scheduling and timeouts for tests
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5,sched_min_interval=100000
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
BatchStartTimeout=20
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
JobRequeue=1
MaxArraySize=1001
EnforcePartLimits=ALL
# a requeued job waits cred_expire seconds before it may start again (default 120; 5 is the least Slurm
# accepts). It is also the life of a job credential, from the controller to slurmd: milliseconds here.
AuthInfo=cred_expire=6
NodeName=$NODE_RANGE NodeHostname=$HOST Port=$PORT_RANGE CPUs=36 RealMemory=245760 Gres=gpu:1 State=UNKNOWN
PartitionName=gpu Nodes=$NODE_RANGE Default=YES MaxTime=24:00:00 State=UP
PartitionName=debug Nodes=$NODE_RANGE Default=NO MaxTime=24:00:00 State=UP
EOF
}

gen_gres_conf() {
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/nvidia0\n' "$NODE_RANGE" "$DIR"
}

gen_dbd_conf() {
    cat <<EOF
# Written by hpcseg scripts/local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
EOF
}

# write_if_changed FILE MODE CONTENT -> returns 0 when the file was (re)written
write_if_changed() {
    local f=$1 mode=$2 content=$3
    if [ -f "$f" ] && [ "$(cat "$f")" = "$content" ]; then return 1; fi
    printf '%s\n' "$content" >"$f.tmp.$$" && chmod "$mode" "$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
    return 0
}

CONF_CHANGED=0
write_configs() {
    mkdir -p "$CONF_DIR" "$LOG" "$RUN" "$DIR/state" "${NODES[@]/#/$DIR/spool/}" || die config "cannot create $DIR"
    if [ ! -c "$DIR/nvidia0" ]; then
        rm -f "$DIR/nvidia0"
        mknod "$DIR/nvidia0" c 195 0 || die config "mknod $DIR/nvidia0 c 195 0 failed (a fake GPU device for gres.conf)"
    fi
    write_if_changed "$DIR/task-prolog.sh" 755 "$(gen_task_prolog)" && CONF_CHANGED=1
    write_if_changed "$SLURM_CONF" 644 "$(gen_slurm_conf)" && CONF_CHANGED=1
    write_if_changed "$GRES_CONF" 644 "$(gen_gres_conf)" && CONF_CHANGED=1
    write_if_changed "$DBD_CONF" 600 "$(gen_dbd_conf)" && CONF_CHANGED=1
    chmod 600 "$DBD_CONF"
}

configs_current() {
    [ -f "$SLURM_CONF" ] && [ "$(cat "$SLURM_CONF")" = "$(gen_slurm_conf)" ] &&
        [ -f "$GRES_CONF" ] && [ "$(cat "$GRES_CONF")" = "$(gen_gres_conf)" ] &&
        [ -f "$DBD_CONF" ] && [ "$(cat "$DBD_CONF")" = "$(gen_dbd_conf)" ] && [ -c "$DIR/nvidia0" ] &&
        [ -f "$DIR/task-prolog.sh" ] && [ "$(cat "$DIR/task-prolog.sh")" = "$(gen_task_prolog)" ]
}

# ---------------------------------------------------------------------------------------------- daemons
munge_ok()     { pid_alive "$MUNGE_PID" munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mysql_ok()     { pid_alive "$MYSQL_PID" mariadbd || pid_alive "$MYSQL_PID" mysqld; }
mysql_ping()   { mysqladmin --socket="$MYSQL_SOCK" ping >/dev/null 2>&1; }
slurmdbd_ok()  { pid_alive "$RUN/slurmdbd.pid" slurmdbd; }
slurmctld_ok() { pid_alive "$RUN/slurmctld.pid" slurmctld; }
slurmd_ok()    { pid_alive "$RUN/slurmd-$1.pid" slurmd; }
ctld_ping()    { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_munge() {
    munge_ok && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 || die munge "no /etc/munge/munge.key and mungekey failed"; }
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PID"
    runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 || /usr/sbin/munged --force >/dev/null 2>&1 \
        || die munge "munged did not start" /var/log/munge/munged.log
    wait_for 10 munge_ok || die munge "munge -n | unmunge fails" /var/log/munge/munged.log
}

start_mysql() {
    if ! mysql_ok; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            mysql_install_db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1 \
                || die mariadb "mysql_install_db failed" "$LOG/mariadb-install.log"
        fi
        touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
        # setsid + nohup: survive the shell that ran 'up'
        setsid nohup mysqld_safe --user=mysql --pid-file="$MYSQL_PID" --socket="$MYSQL_SOCK" \
            --bind-address=127.0.0.1 --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=64M --skip-name-resolve </dev/null >"$LOG/mysqld_safe.out" 2>&1 &
    fi
    wait_for 60 mysql_ping || die mariadb "mysqladmin ping does not answer" "$LOG/mariadb.log"
    mysql --socket="$MYSQL_SOCK" -u root >"$LOG/mariadb-setup.log" 2>&1 <<EOF || die mariadb "creating $DB_NAME / user $DB_USER failed" "$LOG/mariadb-setup.log"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

dbd_answers() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
    if ! slurmdbd_ok; then
        rm -f "$RUN/slurmdbd.pid"
        slurmdbd >>"$LOG/slurmdbd.out" 2>&1 || die slurmdbd "slurmdbd did not start" "$LOG/slurmdbd.log"
    fi
    wait_for 60 dbd_answers || die slurmdbd "sacctmgr cannot reach slurmdbd" "$LOG/slurmdbd.log"
    if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >"$LOG/sacctmgr.out" 2>&1 \
            || die slurmdbd "sacctmgr -i add cluster $CLUSTER failed" "$LOG/sacctmgr.out"
    fi
}

start_slurmctld() {
    if ! slurmctld_ok; then
        rm -f "$RUN/slurmctld.pid"
        slurmctld >>"$LOG/slurmctld.out" 2>&1 || die slurmctld "slurmctld did not start" "$LOG/slurmctld.log"
    fi
    wait_for 30 ctld_ping || die slurmctld "scontrol ping does not report UP" "$LOG/slurmctld.log"
}

start_slurmd() {
    local n=$1
    slurmd_ok "$n" && return 0
    rm -f "$RUN/slurmd-$n.pid"
    slurmd -N "$n" >>"$LOG/slurmd-$n.out" 2>&1 || die "slurmd $n" "slurmd -N $n did not start" "$LOG/slurmd-$n.log"
    wait_for 15 slurmd_ok "$n" || die "slurmd $n" "slurmd -N $n exited" "$LOG/slurmd-$n.log"
}

stop_slurmds()  { local n items=(); for n in "$@"; do items+=("$RUN/slurmd-$n.pid:slurmd"); done; stop_pids 20 "${items[@]}"; }
stop_slurmctld() { stop_pid "$RUN/slurmctld.pid" slurmctld 30; }
# all slurmd and slurmctld together (they take 2-3 s each to shut down)
stop_slurm_daemons() {
    local n items=("$RUN/slurmctld.pid:slurmctld"); for n in "${NODES[@]}"; do items+=("$RUN/slurmd-$n.pid:slurmd"); done
    stop_pids 30 "${items[@]}"
}

# node states as "node1 idle" lines
node_states() { sinfo -h -N -p gpu -o '%N %t' 2>/dev/null | sort -u; }

# healthy: every node answers and is usable (idle, mix, alloc, completing)
nodes_healthy() {
    local states n
    states=$(node_states) || return 1
    [ "$(printf '%s\n' "$states" | grep -cE ' (idle|mix|alloc|comp)$')" = "${#NODES[@]}" ]
}

# the three nodes idle or running our jobs, no '*' (not responding), no drain/down
wait_nodes() {
    local i
    for ((i = 0; i < WAIT * 2; i++)); do
        nodes_healthy && return 0
        # nodes left DOWN/DRAIN by an earlier crash come back without a human
        if [ $((i % 10)) = 9 ]; then
            node_states | awk '$2 ~ /^(down|drain|drng|fail)/ {print $1}' | while read -r n; do
                scontrol update nodename="$n" state=resume >/dev/null 2>&1
            done
        fi
        sleep 0.5
    done
    return 1
}

all_running() {
    local n
    munge_ok && mysql_ok && slurmdbd_ok && slurmctld_ok || return 1
    for n in "${NODES[@]}"; do slurmd_ok "$n" || return 1; done
}

healthy() { all_running && configs_current && ctld_ping && nodes_healthy; }

summary() {
    local states
    states=$(node_states | tr '\n' ' ')
    echo "local-slurm: cluster '$CLUSTER' up on $HOST: nodes ${states% }; partitions gpu (default), debug; accounting via slurmdbd; logs in $LOG${1:+ ($1)}"
}

# ---------------------------------------------------------------------------------------------- verbs
cmd_up() {
    local t0=$SECONDS n
    if healthy; then summary "already running"; return 0; fi
    mkdir -p "$LOG" "$RUN" 2>/dev/null || die setup "cannot create $LOG and $RUN (HPCSEG_SLURM_DIR=$DIR)"
    install_packages
    write_configs
    if [ "$CONF_CHANGED" = 1 ] && slurmctld_ok; then
        # new configuration: restart the Slurm daemons so all of them read it
        stop_slurm_daemons
    fi
    start_munge
    start_mysql
    start_slurmdbd
    start_slurmctld
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    if ! wait_nodes; then
        say "local-slurm: FAILED at step 'nodes': the nodes are not idle after ${WAIT}s:"
        sinfo -N -l >&2
        for n in "${NODES[@]}"; do say "--- last lines of $LOG/slurmd-$n.log:"; tail -n 8 "$LOG/slurmd-$n.log" >&2; done
        say "--- last lines of $LOG/slurmctld.log:"; tail -n 15 "$LOG/slurmctld.log" >&2
        exit 1
    fi
    sacct -n -X -S now-1minute >/dev/null 2>"$LOG/sacct.err" || die sacct "sacct does not work" "$LOG/sacct.err"
    summary "started in $((SECONDS - t0)) s"
}

cmd_down() {
    stop_slurm_daemons
    stop_pid "$RUN/slurmdbd.pid" slurmdbd 20
    if mysql_ok; then
        mysqladmin --socket="$MYSQL_SOCK" shutdown >/dev/null 2>&1 || stop_pid "$MYSQL_PID" mariadbd 30
        wait_for 30 eval '! pgrep -x mariadbd && ! pgrep -x mysqld_safe'
    fi
    if munge_ok || pid_alive "$MUNGE_PID" munged; then
        /usr/sbin/munged --stop >/dev/null 2>&1 || stop_pid "$MUNGE_PID" munged 10
    fi
    echo "local-slurm: stopped"
}

cmd_status() {
    local rc=0 n
    line() { if "$2" "${@:3}"; then echo "$1: running"; else echo "$1: stopped"; rc=1; fi; }
    line munge munge_ok
    line mariadb mysql_ok
    line slurmdbd slurmdbd_ok
    line slurmctld slurmctld_ok
    for n in "${NODES[@]}"; do line "slurmd $n" slurmd_ok "$n"; done
    if slurmctld_ok; then
        sinfo 2>&1 || rc=1
        nodes_healthy || { echo "nodes: not all healthy"; rc=1; }
    fi
    return $rc
}

cmd_start_ctld() {
    munge_ok || die slurmctld "munge is not running (run 'up')"
    start_slurmctld
    wait_nodes || { say "local-slurm: nodes not healthy after restarting slurmctld"; sinfo -N >&2; exit 1; }
    echo "local-slurm: slurmctld running"
}

cmd_restart_slurmd() {
    local nodes=("$@") n
    [ ${#nodes[@]} -gt 0 ] || nodes=("${NODES[@]}")
    stop_slurmds "${nodes[@]}"
    for n in "${nodes[@]}"; do start_slurmd "$n"; done
    if slurmctld_ok; then
        wait_nodes || { say "local-slurm: nodes not healthy after restarting slurmd"; sinfo -N >&2; exit 1; }
    fi
    echo "local-slurm: slurmd restarted on ${nodes[*]}"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop-ctld) stop_slurmctld; echo "local-slurm: slurmctld stopped" ;;
    start-ctld) cmd_start_ctld ;;
    restart-ctld) stop_slurmctld; cmd_start_ctld ;;
    restart-slurmd) shift; cmd_restart_slurmd "$@" ;;
    *) say "usage: $0 up|down|status|stop-ctld|start-ctld|restart-ctld|restart-slurmd [nodeN...]"; exit 2 ;;
esac
