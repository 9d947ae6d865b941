#!/bin/sh
# tools/demo.sh - qkit's demo on an embedded default, run from the top
# directory after `make` (`make demo` does both).
#
# Makes a fresh spool under ./var/spool (config ./var/qkit.conf), submits
# 300 small messages to ten destination domains with bin/qctl, then prints
# the queue (qctl list -c, the first lines of qctl list), qctl stats and
# qctl retry.  Delivery by bin/qrun (a local SMTP sink, a down destination
# left in retry) is not part of it yet: the demo says so and does not
# pretend.
set -eu

N=300
top=$(pwd)
qctl="$top/bin/qctl"
conf=var/qkit.conf

if [ ! -f Makefile.in ] || [ ! -d libq ]; then
	echo "demo: run me from the top of the qkit tree" >&2
	exit 1
fi
if [ ! -x "$qctl" ]; then
	echo "demo: bin/qctl is not built (run ./configure && make first; if bin/qctl.c does not exist yet, qctl is not written yet)" >&2
	exit 1
fi

# A fresh spool each time, so that the counts below mean this run.
rm -rf var/spool
mkdir -p var
chmod 700 var
mkdir -m 700 var/spool
cat > "$conf" <<EOC
# written by tools/demo.sh
spool_directory = $top/var/spool
EOC
echo "demo: spool $top/var/spool, config $conf"

echo "demo: submitting $N messages with: bin/qctl -C $conf submit -f sender@example.org rcpt@dN.example"
i=1
while [ "$i" -le "$N" ]; do
	d=$((i % 10))
	if ! printf 'From: Demo Sender <sender@example.org>\nTo: <rcpt@d%d.example>\nSubject: qkit demo message %d of %d\nMessage-ID: <demo-%d@example.org>\n\nThis is demo message %d for d%d.example.\n' \
		"$d" "$i" "$N" "$i" "$i" "$d" |
		"$qctl" -C "$conf" submit -f sender@example.org "rcpt@d$d.example" >/dev/null; then
		echo "demo: qctl submit failed on message $i" >&2
		exit 1
	fi
	i=$((i + 1))
done
echo "demo: submitted $N messages"

show() {
	echo
	echo "\$ bin/qctl -C $conf $*"
	"$qctl" -C "$conf" "$@"
}

show list -c
echo
echo "\$ bin/qctl -C $conf list | head -n 12"
"$qctl" -C "$conf" list | head -n 12
show stats
show retry

echo
if [ -x bin/qrun ]; then
	echo "demo: bin/qrun is built, but this demo does not run deliveries yet: nothing was delivered, the $N messages stay queued."
else
	echo "demo: delivery (qrun) is not built yet: nothing was delivered, the $N messages stay queued in var/spool."
fi
