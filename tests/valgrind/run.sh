#!/bin/sh
# tests/valgrind/run.sh - bin/qrun delivering 200 messages under valgrind
# (issue 5, "Memory and sanitizers"). Run by `make valgrind` (and so by
# make check); see tests/valgrind/README.
#
# Three tests/smtpd servers on loopback: a plain sink, a STARTTLS sink
# with a certificate qrun verifies (tls_verify_certificates, and
# hosts_require_tls for it), and a faulty one (4xx and 5xx at the final
# dot, a connection dropped in the data). N messages (default 200) each
# go to the plain sink and to the TLS sink; every tenth also to the
# faulty server. Then, each under valgrind:
#   qrun -P 4 --json     the run (deliveries, deferrals, a bounce)
#   qrun -f --json       a forced second run (the deferred ones again,
#                        the bounce, a retry record cleared)
#   qctl list, qctl retry, qctl show ID --log, qhints dump retry
# valgrind: --leak-check=full --errors-for-leak-kinds=definite,indirect
# --error-exitcode=99. Any error or definite/indirect leak fails the
# script, and so does a run that did not deliver what it should.
#
# Environment: QKIT_TOP (default: the current directory), VALGRIND
# (default: valgrind), QKIT_VALGRIND_MESSAGES (default 200),
# QKIT_KEEP_TMP (keep the work directory). Exit 0 clean, 1 otherwise.
set -u

top=${QKIT_TOP:-$(pwd)}
vg=${VALGRIND:-valgrind}
n=${QKIT_VALGRIND_MESSAGES:-200}
supp="$top/tests/valgrind/qkit.supp"   # Berkeley DB's noise only

say() { printf 'valgrind: %s\n' "$*"; }
die() { say "FAILED: $*"; exit 1; }

command -v "$vg" >/dev/null 2>&1 ||
	die "'$vg' not found (Debian package valgrind)"
command -v openssl >/dev/null 2>&1 || die "openssl not found"
for p in bin/qrun bin/qctl hints/qhints tests/smtpd; do
	[ -x "$top/$p" ] || die "$top/$p is not built (make first)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qkit-valgrind.XXXXXX") || die "mktemp"
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	if [ -n "${QKIT_KEEP_TMP:-}" ]; then
		say "work directory kept: $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---- certificate (self-signed, mx-tls.test; it is also the CA) ----------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-days 2 -subj /CN=mx-tls.test -addext subjectAltName=DNS:mx-tls.test \
	-keyout "$tmp/tls.key" -out "$tmp/tls.crt" >"$tmp/openssl.log" 2>&1 ||
	die "openssl req: $(cat "$tmp/openssl.log")"

# ---- servers ---------------------------------------------------------------
# start NAME [smtpd options]: sets port_NAME
start() {
	name=$1
	shift
	"$top/tests/smtpd" -p 0 -t 120 -r "$tmp/$name.rec" "$@" \
		>"$tmp/$name.out" 2>&1 &
	pids="$pids $!"
	i=0
	while ! grep -q '^READY ' "$tmp/$name.out" 2>/dev/null; do
		i=$((i + 1))
		[ $i -le 200 ] || die "smtpd $name did not start: $(cat "$tmp/$name.out")"
		sleep 0.05
	done
	eval "port_$name=\$(sed -n 's/^READY \([0-9]*\).*/\1/p' \"\$tmp/\$name.out\")"
}
# the 2nd end of data gets a 451, the 3rd a 550 (a bounce), the 4th
# connection loses its connection in the data
cat >"$tmp/faults.script" <<'EOF'
dot#2: 451 4.3.0 try again later
dot#3: 550 5.7.1 refused
conn 4
data: default; flush; drop
EOF
start plain
start tls -c "$tmp/tls.crt" -k "$tmp/tls.key"
start faults -s "$tmp/faults.script"

cat >"$tmp/hosts" <<EOF
127.0.0.1 mx-plain.test
127.0.0.1 mx-tls.test
127.0.0.1 mx-faults.test
EOF
cat >"$tmp/qkit.conf" <<EOF
spool_directory = $tmp/spool
primary_hostname = client.test
hosts_file = $tmp/hosts
connect_timeout = 10s
command_timeout = 30s
data_timeout = 30s
final_timeout = 30s
route plain.example = mx-plain.test:$port_plain
route tls.example = mx-tls.test:$port_tls
route faults.example = mx-faults.test:$port_faults
route * = mx-plain.test:$port_plain
tls_verify_certificates = $tmp/tls.crt
tls_verify_hosts = mx-tls.test
hosts_require_tls = mx-tls.test
EOF

# ---- the queue (qctl submit, not under valgrind) ----------------------------
i=0
nf=0
while [ $i -lt "$n" ]; do
	if [ $((i % 10)) -eq 0 ]; then
		extra=f$i@faults.example
		nf=$((nf + 1))
	else
		extra=
	fi
	printf 'From: a@sender.example\nSubject: valgrind %d\nMessage-ID: <vg-%d@sender.example>\n\nHello %d.\n.a line with a dot\n' \
		"$i" "$i" "$i" |
		"$top/bin/qctl" -C "$tmp/qkit.conf" submit -f a@sender.example \
			"u$i@plain.example" "u$i@tls.example" $extra \
			>>"$tmp/ids" 2>>"$tmp/submit.err" ||
		die "qctl submit: $(cat "$tmp/submit.err")"
	i=$((i + 1))
done
# one more, frozen: it stays through both runs (qctl show below)
printf 'Subject: frozen\n\nStays.\n' |
	"$top/bin/qctl" -C "$tmp/qkit.conf" submit -f a@sender.example \
		z@plain.example >"$tmp/frozen" 2>>"$tmp/submit.err" ||
	die "qctl submit: $(cat "$tmp/submit.err")"
frozen=$(cat "$tmp/frozen")
"$top/bin/qctl" -C "$tmp/qkit.conf" freeze "$frozen" >/dev/null 2>&1 ||
	die "qctl freeze $frozen"
say "$n messages spooled ($nf with a recipient at the faulty server), one frozen"

# ---- under valgrind ---------------------------------------------------------
vgopts="--leak-check=full --errors-for-leak-kinds=definite,indirect"
vgopts="$vgopts --error-exitcode=99 --num-callers=30"
if [ -z "${QKIT_VALGRIND_NOSUPP:-}" ]; then
	vgopts="$vgopts --suppressions=$supp"
fi
[ -z "${QKIT_VALGRIND_ORIGINS:-}" ] || vgopts="$vgopts --track-origins=yes"
k=0
# vgrun NAME PROG ARGS...: PROG under valgrind; stdout in $tmp/NAME.stdout
vgrun() {
	name=$1
	shift
	k=$((k + 1))
	"$vg" -q --log-file="$tmp/vg-$name.log" $vgopts "$@" \
		>"$tmp/$name.stdout" 2>"$tmp/$name.stderr" </dev/null
	rc=$?
	if [ $rc -eq 99 ] || grep -q 'ERROR SUMMARY: [1-9]' "$tmp/vg-$name.log" ||
	   [ -s "$tmp/vg-$name.log" ]; then
		say "valgrind reports for $name (exit $rc):"
		cat "$tmp/vg-$name.log"
		QKIT_KEEP_TMP=1
		die "$name: memory errors or leaks"
	fi
	[ $rc -eq 0 ] || die "$name exited $rc: $(cat "$tmp/$name.stderr")"
}
# (-q: valgrind writes to its log only when it has something to say)

t0=$(date +%s)
vgrun qrun1 "$top/bin/qrun" -C "$tmp/qkit.conf" -P 4 --json
t1=$(date +%s)
say "run 1: $(cat "$tmp/qrun1.stdout") ($((t1 - t0)) s under valgrind)"

json=$(cat "$tmp/qrun1.stdout")
num() { printf '%s' "$json" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
[ "$(num messages)" = "$n" ] || die "run 1 saw $(num messages) messages, not $n"
[ "$(num delivered)" -ge $((2 * n)) ] ||
	die "run 1 delivered $(num delivered), expected at least $((2 * n))"
[ "$(num tls)" -ge 1 ] || die "run 1 made no TLS connection"

# the deferred ones and the bounce, forced
vgrun qrun2 "$top/bin/qrun" -C "$tmp/qkit.conf" -f -P 4 --json
say "run 2: $(cat "$tmp/qrun2.stdout")"
vgrun list "$top/bin/qctl" -C "$tmp/qkit.conf" list
vgrun retry "$top/bin/qctl" -C "$tmp/qkit.conf" retry
vgrun show "$top/bin/qctl" -C "$tmp/qkit.conf" show "$frozen" --log
vgrun dump "$top/hints/qhints" -C "$tmp/qkit.conf" dump retry
for p in $pids; do kill "$p" 2>/dev/null; done
for p in $pids; do wait "$p" 2>/dev/null; done
pids=

# what the servers took: each message once at each sink
for s in plain tls; do
	st=$(sed -n 's/^STATS //p' "$tmp/$s.out" | tail -n 1)
	m=$(printf '%s' "$st" | sed -n 's/.*msgs=\([0-9]*\).*/\1/p')
	[ -n "$m" ] && [ "$m" -ge "$n" ] || die "server $s: $st (expected msgs >= $n)"
	say "server $s: $st"
done
tls=$(sed -n 's/^STATS .*tls=\([0-9]*\).*/\1/p' "$tmp/tls.out" | tail -n 1)
[ "$tls" -ge 1 ] || die "no TLS handshake at the TLS server"
grep -q ' tls .*version=TLSv1' "$tmp/tls.rec" || die "no TLS session recorded"
if grep -q 'cmd g=[0-9]* MAIL' "$tmp/tls.rec" &&
   awk '$2 == "cmd" && $4 ~ /^MAIL/ { mail[$1] = 1 } $2 == "tls" { tls[$1] = 1 }
	END { for (c in mail) if (!(c in tls)) exit 1 }' "$tmp/tls.rec"; then
	:
else
	die "a MAIL went to the TLS server outside TLS"
fi
say "clean: $k programs under valgrind, no errors, no definite or indirect leaks"
exit 0
