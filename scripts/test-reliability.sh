#!/usr/bin/env bash
# The full reliability run (make test-reliability): every test with the
# reliability suites at full size (KMD_RELIABILITY=full: >= 200 kill -9,
# bigger fault and concurrency counts), then every fuzz target for
# FUZZTIME each. Prints the totals RELIABILITY.md quotes; the whole log is
# kept in $LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
LOG=${LOG:-reliability.log}
: >"$LOG"
start=$(date +%s)

echo "== tests, full size (log: $LOG)"
KMD_RELIABILITY=full "$GO" test -race -count=1 -timeout 120m -v ./... >>"$LOG" 2>&1 || {
	grep -E '^(--- FAIL|FAIL|panic:)' "$LOG" || tail -50 "$LOG"
	echo "test-reliability: tests failed; see $LOG" >&2
	exit 1
}

echo "== fuzz targets, $FUZZTIME each"
fuzzed=0
while read -r pkg name; do
	echo "   $pkg $name"
	echo "== fuzz $pkg $name" >>"$LOG"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >>"$LOG" 2>&1; then
		tail -30 "$LOG"
		echo "test-reliability: $name in $pkg failed; the failing input is in $pkg's testdata/fuzz/$name" >&2
		exit 1
	fi
	fuzzed=$((fuzzed + 1))
done < <("$GO" test -list '^Fuzz' ./... | awk '/^ok /{pkg=$2; for (i in names) print pkg, names[i]; delete names; n=0} /^Fuzz/{names[n++]=$1}')

echo "== totals"
grep -ho 'RELIABILITY [a-z-]* [0-9]*' "$LOG" |
	awk '{sum[$2]+=$3} END {for (k in sum) printf "   %-22s %d\n", k, sum[k]}' | sort
printf "   %-22s %d (%s each)\n" "fuzz-targets" "$fuzzed" "$FUZZTIME"
printf "   %-22s %ds\n" "wall-time" "$(($(date +%s) - start))"
