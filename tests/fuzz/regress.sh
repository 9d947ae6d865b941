#!/bin/sh
# tests/fuzz/regress.sh - replay inputs through fuzz targets once
# (make fuzz-regress).
#
#   sh tests/fuzz/regress.sh [-b BINDIR] NAME...
#
# For each NAME, every file of tests/fuzz/regress/NAME/ and
# tests/fuzz/corpus/NAME/ goes through BINDIR/fuzz_NAME (default
# tests/fuzz/bin), with QKIT_FUZZ_FULL=1 (the envelope and journal targets
# take the spool path for every input). When a target fails, each file is
# run alone so that every failing file is named. Output in
# build/fuzz-regress-NAME.log. Exits 1 if any input failed.
bin=tests/fuzz/bin
while getopts b: c; do
	case $c in
	b) bin=$OPTARG ;;
	*) echo "usage: $0 [-b BINDIR] NAME..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
QKIT_FUZZ_FULL=1
export QKIT_FUZZ_FULL
mkdir -p build || exit 1
rc=0
for t in "$@"; do
	set --
	for f in tests/fuzz/regress/"$t"/* tests/fuzz/corpus/"$t"/*; do
		if [ -f "$f" ]; then set -- "$@" "$f"; fi
	done
	if [ $# -eq 0 ]; then continue; fi
	log=build/fuzz-regress-$t.log
	if "$bin/fuzz_$t" "$@" > "$log" 2>&1; then
		echo "fuzz-regress $t: $# inputs ok"
		continue
	fi
	rc=1
	bad=0
	: > "$log"
	for f in "$@"; do
		if ! "$bin/fuzz_$t" "$f" > "$log.one" 2>&1; then
			bad=$((bad + 1))
			echo "== fuzz-regress $t FAILED: $f"
			grep -E '^(SUMMARY|fuzz check failed|harness|  [^ ])|runtime error' \
				"$log.one" | head -n 3
			cat "$log.one" >> "$log"
		fi
	done
	rm -f "$log.one"
	echo "fuzz-regress $t: $bad of $# inputs FAILED (log $log)"
done
exit $rc
