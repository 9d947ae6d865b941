#!/bin/sh
# tools/demo.sh - qkit's demo on an embedded default, run from the top
# directory after `make` (`make demo` does both).
#
# A fresh spool under ./var/spool (config ./var/qkit.conf); a local SMTP
# sink (tests/smtpd, qkit's test server, on a loopback port); 300 messages
# submitted with qctl, 290 to ten domains routed to the sink and 10 to
# down.example, routed to a loopback port where nothing listens. One qrun
# delivers what it can; the down destination is left in retry. Then the
# queue, its statistics and the retry state are printed.
set -eu

N=300
top=$(pwd)
qctl="$top/bin/qctl"
qrun="$top/bin/qrun"
smtpd="$top/tests/smtpd"
conf=var/qkit.conf

if [ ! -f Makefile.in ] || [ ! -d libq ]; then
	echo "demo: run me from the top of the qkit tree" >&2
	exit 1
fi
for p in "$qctl" "$qrun" "$smtpd"; do
	if [ ! -x "$p" ]; then
		echo "demo: $p is not built (run ./configure && make first)" >&2
		exit 1
	fi
done

rm -rf var/spool var/sink.out var/sink.record var/hosts
mkdir -p var
chmod 700 var
mkdir -m 700 var/spool

# the sink: qkit's test server, a plain SMTP sink on a free loopback port
"$smtpd" -l 127.0.0.1:0 -t 60 -B -r var/sink.record >var/sink.out 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
port=""
i=0
while [ -z "$port" ] && [ "$i" -lt 100 ]; do
	port=$(sed -n 's/^READY \([0-9]*\).*/\1/p' var/sink.out 2>/dev/null || true)
	[ -n "$port" ] || sleep 0.05
	i=$((i + 1))
done
if [ -z "$port" ]; then
	echo "demo: the sink did not start:" >&2
	cat var/sink.out >&2
	exit 1
fi
# a loopback port where nothing listens: the destination that is down
down=$((port == 65535 ? port - 1 : port + 1))

printf '127.0.0.1 mx.sink.example\n127.0.0.1 mx.down.example\n' >var/hosts
cat > "$conf" <<EOC
# written by tools/demo.sh
spool_directory = $top/var/spool
hosts_file = $top/var/hosts
primary_hostname = demo.client.example
connect_timeout = 5s
route down.example = mx.down.example:$down
route * = mx.sink.example:$port
EOC
echo "demo: spool $top/var/spool, config $conf"
echo "demo: SMTP sink (tests/smtpd) mx.sink.example = 127.0.0.1:$port; down.example -> mx.down.example = 127.0.0.1:$down (nothing listens)"

echo "demo: submitting $N messages with: bin/qctl -C $conf submit -f sender@example.org RCPT"
i=1
while [ "$i" -le "$N" ]; do
	if [ $((i % 30)) -eq 0 ]; then dom=down.example; else dom="d$((i % 10)).example"; fi
	if ! printf 'From: Demo Sender <sender@example.org>\nTo: <rcpt%d@%s>\nSubject: qkit demo message %d of %d\nMessage-ID: <demo-%d@example.org>\n\nThis is demo message %d.\n' \
		"$i" "$dom" "$i" "$N" "$i" "$i" |
		"$qctl" -C "$conf" submit -f sender@example.org "rcpt$i@$dom" >/dev/null; then
		echo "demo: qctl submit failed on message $i" >&2
		exit 1
	fi
	i=$((i + 1))
done

show() {
	echo
	echo "\$ bin/qctl -C $conf $*"
	"$qctl" -C "$conf" "$@"
}

show list -c
echo
echo "\$ bin/qrun -C $conf -P 2 -v   (summary line)"
"$qrun" -C "$conf" -P 2 -v | tail -n 1
show list
show stats
show retry
kill "$sink" 2>/dev/null || true
wait "$sink" 2>/dev/null || true
trap - EXIT
echo
echo "demo: the sink says: $(grep '^STATS' var/sink.out || echo 'no STATS line')"
echo "demo: delivered messages left the queue; the $((N / 30)) to down.example wait for their retry time (qctl retry shows it)."
echo "demo: try: bin/qctl -C $conf show ID, bin/qrun -C $conf -f -v, bin/qtop -C $conf"
