#!/bin/sh
# tests/fuzz/run.sh - run fuzz targets one after the other (make fuzz-run).
#
#   sh tests/fuzz/run.sh [-b BINDIR] [-w WORKDIR] [-s SECONDS] [-o "OPTS"] NAME...
#
# For each NAME: a fresh WORKDIR/NAME/ (default build/fuzz-run) with a copy
# of tests/fuzz/corpus/NAME/ in corpus/, libFuzzer writing what it finds
# there and crashing inputs to artifacts/, its output to log; the
# dictionary tests/fuzz/NAME.dict when there is one; BINDIR/fuzz_NAME
# (default tests/fuzz/bin) for SECONDS (default 60). Prints libFuzzer's
# last status line (executions, cov:, ft:, corp:, exec/s) and the corpus
# size. Runs every target even when one fails; exits 1 if any failed.
bin=tests/fuzz/bin
work=build/fuzz-run
secs=60
opts=
while getopts b:w:s:o: c; do
	case $c in
	b) bin=$OPTARG ;;
	w) work=$OPTARG ;;
	s) secs=$OPTARG ;;
	o) opts=$OPTARG ;;
	*) echo "usage: $0 [-b BINDIR] [-w WORKDIR] [-s SECONDS] [-o OPTS] NAME..." >&2
	   exit 2 ;;
	esac
done
shift $((OPTIND - 1))
rc=0
for t in "$@"; do
	w=$work/$t
	rm -rf "$w"
	mkdir -p "$w/corpus" "$w/artifacts" || exit 1
	if [ -d "tests/fuzz/corpus/$t" ]; then
		cp -p "tests/fuzz/corpus/$t/"* "$w/corpus/" 2>/dev/null
	fi
	set --
	if [ -f "tests/fuzz/$t.dict" ]; then
		set -- "-dict=tests/fuzz/$t.dict"
	fi
	echo "== fuzz_$t: $secs s from $(ls "$w/corpus" | wc -l) seeds"
	# shellcheck disable=SC2086
	"$bin/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$w/artifacts/" "$@" $opts "$w/corpus" \
		> "$w/log" 2>&1
	st=$?
	grep -E '^#[0-9]+' "$w/log" | tail -n 1
	grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$w/log"
	echo "corpus: $(ls "$w/corpus" | wc -l) files"
	if [ $st -ne 0 ]; then
		rc=1
		echo "== fuzz_$t FAILED (exit status $st); log $w/log:"
		tail -n 40 "$w/log"
		ls -l "$w/artifacts"
	fi
done
exit $rc
