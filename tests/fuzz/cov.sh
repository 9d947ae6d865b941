#!/bin/sh
# tests/fuzz/cov.sh - source coverage of the fuzz targets' own modules
# (make fuzz-cov).
#
#   sh tests/fuzz/cov.sh [-b BINDIR] [-w WORKDIR] NAME...
#
# BINDIR/fuzz_NAME are built with -fprofile-instr-generate
# -fcoverage-mapping (make fuzz-cov builds them in build/fuzz-cov/bin).
# Each runs once over WORKDIR/NAME/corpus (what the last make fuzz-run
# found; default build/fuzz-run) or, when there is none, over the seeds
# tests/fuzz/corpus/NAME; then llvm-cov reports line, region and function
# coverage of the library files that the target is about, and of its
# parser functions. LLVM_COV and LLVM_PROFDATA name the tools.
bin=build/fuzz-cov/bin
work=build/fuzz-run
while getopts b:w: c; do
	case $c in
	b) bin=$OPTARG ;;
	w) work=$OPTARG ;;
	*) echo "usage: $0 [-b BINDIR] [-w WORKDIR] NAME..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
cov=${LLVM_COV-llvm-cov}
profdata=${LLVM_PROFDATA-llvm-profdata}
out=build/fuzz-cov
mkdir -p "$out" || exit 1
rc=0
for t in "$@"; do
	ffiles=
	case $t in
	reply)      files=libq/q_smtp_reply.c; funcs= ;;
	envelope)   files=libq/q_spool.c
		    funcs='env_parse|parse_rcpt_line|expect_field|field_u64|field_str|tok_get|split_line|next_line|parse_u64|env_encode|tok_put' ;;
	journal)    files=libq/q_spool.c
		    funcs='journal_apply|rcpt_apply|tok_get|split_line|next_line|parse_u64' ;;
	config)     files=libq/q_conf.c; funcs= ;;
	retry_rule) files=libq/q_retry.c
		    funcs='q_retry_parse_algos|parse_factor|take_token|kind_parse|q_retry_kind_valid|q_retry_kind_match|q_retry_compute' ;;
	address)    files=libq/q_addr.c; funcs= ;;
	record)     files="libq/q_retry.c libq/q_index.c libq/q_serialize.c libq/q_session.c"
		    ffiles=libq/q_hints.c
		    funcs='q_retry_rec_decode|q_retry_rec_encode|q_index_rec_decode|q_index_rec_encode|q_slot_decode|q_slot_stale|q_session_decode|q_rec_get_.*|rec_take' ;;
	*)          files=; funcs= ;;
	esac
	ffiles="$files $ffiles"
	corpus=$work/$t/corpus
	if [ ! -d "$corpus" ]; then corpus=tests/fuzz/corpus/$t; fi
	rm -f "$out/$t.profraw" "$out/$t.profdata"
	echo "== fuzz_$t: coverage from $(ls "$corpus" | wc -l) inputs in $corpus"
	if ! LLVM_PROFILE_FILE="$out/$t.profraw" "$bin/fuzz_$t" -runs=0 "$corpus" \
		> "$out/$t.log" 2>&1; then
		echo "fuzz_$t failed on its corpus (log $out/$t.log)"
		rc=1
		continue
	fi
	"$profdata" merge -sparse -o "$out/$t.profdata" "$out/$t.profraw" || { rc=1; continue; }
	if [ -z "$files" ]; then continue; fi
	# shellcheck disable=SC2086
	"$cov" report "$bin/fuzz_$t" -instr-profile="$out/$t.profdata" $files |
		grep -v -E '^-+$'
	if [ -n "$funcs" ]; then
		# shellcheck disable=SC2086
		"$cov" report -show-functions "$bin/fuzz_$t" \
			-instr-profile="$out/$t.profdata" $ffiles |
			grep -E "^([^ ]*:)?($funcs) " |
			awk '{ sub(/^.*:/, "", $1);
			       printf "  %-22s lines %4s, missed %3s (%s)\n", $1, $5, $6, $7 }'
	fi
done
exit $rc
