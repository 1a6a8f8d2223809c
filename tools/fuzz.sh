#!/usr/bin/env bash
# fuzz.sh - runs every libFuzzer target of tests/fuzz/ for a bounded time.
# Called by `make fuzz` (FUZZ_SECONDS per target) and tests/test_fuzz.py.
# Usage: tools/fuzz.sh SECONDS [TARGET ...]. Seeds: tests/fuzz/seeds/*.sql
# as SQL, and the databases they build as page images. A crash is saved
# under build-fuzz/crashes/ and fails the run; add it to
# tests/fuzz/regressions/TARGET/ to keep it as a regression test.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_sql fuzz_pages)
out=build-fuzz
mkdir -p "$out/corpus/fuzz_sql" "$out/corpus/fuzz_pages" "$out/crashes"

cp tests/fuzz/seeds/*.sql "$out/corpus/fuzz_sql/"
for seed in tests/fuzz/seeds/*.sql; do
    db="$out/corpus/fuzz_pages/$(basename "$seed" .sql).db"
    [ -f "$db" ] || sqlite3 "$db" < "$seed" || { echo "fuzz: cannot build seed $db"; exit 1; }
done

failed=0
for t in "${targets[@]}"; do
    regressions=(tests/fuzz/regressions/"$t"/*)
    if [ -e "${regressions[0]}" ]; then
        "$out/$t" "${regressions[@]}" >"$out/$t.regressions.log" 2>&1 ||
            { echo "fuzz: $t fails a regression input (see $out/$t.regressions.log)"; failed=1; }
    fi
    if "$out/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$t-" "$out/corpus/$t" >"$out/$t.log" 2>&1; then
        echo "fuzz: $t ran $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$') inputs in ${seconds}s: no crash"
    else
        echo "fuzz: $t found a crash:"
        grep -E 'ERROR|SUMMARY|artifact' "$out/$t.log" | head -5
        failed=1
    fi
done
exit $failed
