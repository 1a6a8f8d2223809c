#!/usr/bin/env bash
# slt-all.sh - runs every sqllogictest file through kvsql-slt's native,
# memory, module and vfs (the redis VFS of libkvsql) engines, then prints
# the totals and time per engine.
# Called by `make slt` as: tools/slt-all.sh BUILD_DIR SLT_DIR
#
# Starts its own redis-server with BUILD_DIR/kvsql.so on a free loopback
# port in a temporary directory and stops it on exit. Each engine's run is
# bounded by SLT_TIMEOUT seconds (default 1200). KVSQL_PRELOAD, when set
# (SANITIZE=1), is preloaded into redis-server for a sanitized module.
# Exit status: 0 when every record passed on every engine.
set -uo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
slt_dir=${2:-../shared/slt}
timeout_s=${SLT_TIMEOUT:-1200}
runner="$build/kvsql-slt"
module="$PWD/$build/kvsql.so"

die() {
    echo "slt-all: $*" >&2
    exit 2
}

[ -x "$runner" ] || die "$runner is not built: run make all"
[ -f "$module" ] || die "$module is not built: run make all"
[ -d "$slt_dir" ] || die "no test directory $slt_dir"
mapfile -t files < <(find "$slt_dir" -name '*.test' | sort)
[ ${#files[@]} -gt 0 ] || die "no *.test files under $slt_dir"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvsql-slt-all.XXXXXX") || die "cannot make a temporary directory"
redis_pid=""
port=""

stop_redis() {
    [ -n "$redis_pid" ] || return 0
    timeout 10 redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
    for _ in $(seq 100); do
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
    redis_pid=""
}

cleanup() {
    stop_redis
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_answers() {
    timeout 2 redis-cli -p "$port" ping 2>/dev/null | grep -q PONG
}

# Starts redis-server with the module; a few tries, in case the free port
# was taken meanwhile.
start_redis() {
    for _ in 1 2 3; do
        port=$(free_port) || die "cannot find a free port"
        env ${KVSQL_PRELOAD:+LD_PRELOAD="$KVSQL_PRELOAD"} redis-server --port "$port" --bind 127.0.0.1 \
            --dir "$tmp" --logfile redis.log --save "" --appendonly no --loadmodule "$module" >/dev/null 2>&1 &
        redis_pid=$!
        for _ in $(seq 100); do
            redis_answers && return 0
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        stop_redis
    done
    tail -20 "$tmp/redis.log" >&2 2>/dev/null
    die "redis-server with $module did not start"
}

summary=()
status=0

# Runs every file on one engine, keeping its totals line and time.
run_engine() {
    local name=$1 log="$tmp/$1.log" start end rc counts seconds sql_time
    shift
    echo "== $name"
    start=$(date +%s.%N)
    timeout --kill-after=10 "$timeout_s" "$runner" --engine "$name" "$@" "${files[@]}" | tee "$log"
    rc=${PIPESTATUS[0]}
    end=$(date +%s.%N)
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    counts=$(tail -n 1 "$log" | grep -E '^[0-9]+ passed, [0-9]+ failed$' || echo "no totals (exit status $rc)")
    [ "$rc" -eq 124 ] && counts="timed out after ${timeout_s} s"
    sql_time=$(grep -E '^time in SQL: ' "$log" | tail -n 1 | sed 's/^time in SQL: //')
    summary+=("$(printf '%-7s %-30s %6s s in all; in SQL: %s' "$name" "$counts" "$seconds" "$sql_time")")
    [ "$rc" -eq 0 ] || status=1
}

start_redis
echo "slt-all: ${#files[@]} files from $slt_dir; redis-server with the module on 127.0.0.1:$port"
run_engine native
run_engine memory
run_engine module --redis "127.0.0.1:$port"
run_engine vfs --redis "127.0.0.1:$port"
if grep -q "crashed by signal\|ASSERTION FAILED" "$tmp/redis.log" 2>/dev/null; then
    echo "slt-all: redis-server crashed; the end of its log:"
    tail -40 "$tmp/redis.log"
    status=1
fi

echo "== totals per engine (${#files[@]} files; memory, module and vfs also compared record by record with native)"
printf '%s\n' "${summary[@]}"
exit "$status"
