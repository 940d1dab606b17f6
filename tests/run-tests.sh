#!/bin/sh
# Runs each test program given as argument, counts its TAP lines, and ends
# with the one line CI reads: "N passed, N failed". A program that crashes,
# times out, exits non-zero with no failing assertion, or prints no plan
# counts as one more failure, so a broken test can never look green.
# PARLEY_TEST_TIMEOUT (seconds, default 300) bounds each program.
passed=0
failed=0
timeout_s=${PARLEY_TEST_TIMEOUT:-300}
logdir=${PARLEY_BUILDDIR:-.}/tests/logs
mkdir -p "$logdir"
start=$(date +%s)
for test in "$@"; do
	name=$(basename "$test")
	log="$logdir/$name.log"
	t0=$(date +%s)
	timeout -k 10 "$timeout_s" "./$test" > "$log" 2>&1
	rc=$?
	t1=$(date +%s)
	p=$(grep -c '^ok ' "$log")
	f=$(grep -c '^not ok ' "$log")
	extra=""
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1; extra=" (exit status $rc)"
	elif ! grep -q '^1\.\.[0-9]' "$log"; then
		f=$((f + 1)); extra=" (no plan: the program stopped early)"
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -eq 0 ]; then
		echo "PASS $name: $p assertions, $((t1 - t0))s"
	else
		echo "FAIL $name: $f failed$extra, $p passed, $((t1 - t0))s; log: $log"
		grep -A3 '^not ok' "$log" | head -40 | sed 's/^/    /'
		tail -5 "$log" | sed 's/^/    | /'
	fi
done
echo "suite took $(( $(date +%s) - start ))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
