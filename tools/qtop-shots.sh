#!/bin/sh
# tools/qtop-shots.sh - regenerate doc/qtop-*.txt, screenshots of qtop as
# text (tmux capture-pane), from the top of the tree after `make`.
#
# A demo spool in a fresh directory /tmp/qtop-demo.XXXXXX (removed at the
# end; a short path, so that it shows whole on the summary line):
# four destinations, each served by qkit's test server (tests/smtpd) on
# loopback or by nothing:
#   example.net      a sink: accepts everything (deliveries in the log)
#   stuck.example    a port where nothing listens: connection refused
#   grey.example     answers every RCPT with 451 (greylisting)
#   slow.example     holds the reply to the final dot for 20 s (a live
#                    session for the Sessions view)
# Messages are submitted with qctl, one queue run delivers or defers them,
# two are frozen, then qtop runs in tmux (its own socket, TERM=screen,
# LANG=C.UTF-8, TZ=UTC) and each view is captured.
#
# Needs: tmux. Writes: doc/qtop-queue.txt, doc/qtop-queue-80x24.txt,
# doc/qtop-domains.txt, doc/qtop-message.txt, doc/qtop-retry.txt,
# doc/qtop-sessions.txt, doc/qtop-help.txt, doc/qtop-once.txt.
set -eu

top=$(pwd)
qctl="$top/bin/qctl"
qrun="$top/bin/qrun"
qtop="$top/tui/qtop"
smtpd="$top/tests/smtpd"

if [ ! -f Makefile.in ] || [ ! -d tui ]; then
	echo "qtop-shots: run me from the top of the qkit tree" >&2
	exit 1
fi
for p in "$qctl" "$qrun" "$qtop" "$smtpd"; do
	if [ ! -x "$p" ]; then
		echo "qtop-shots: $p is not built (run make first)" >&2
		exit 1
	fi
done
command -v tmux >/dev/null || { echo "qtop-shots: tmux is needed" >&2; exit 1; }

work=$(mktemp -d /tmp/qtop-demo.XXXXXX)
sock="qtop-shots-$$"
pids=""
cleanup() {
	tmux -L "$sock" kill-server 2>/dev/null || true
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# start tests/smtpd with an optional script; prints its port
server() {
	name=$1
	shift
	"$smtpd" -l 127.0.0.1:0 -t 120 -r "$work/$name.rec" "$@" >"$work/$name.out" 2>&1 &
	pids="$pids $!"
	port=""
	i=0
	while [ -z "$port" ] && [ "$i" -lt 100 ]; do
		port=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$work/$name.out" 2>/dev/null || true)
		[ -n "$port" ] || sleep 0.05
		i=$((i + 1))
	done
	[ -n "$port" ] || { echo "qtop-shots: $name did not start" >&2; exit 1; }
	echo "$port"
}

printf 'rcpt: 451 4.7.1 Greylisted, please try again later\n' >"$work/grey.script"
printf 'dot: delay 20000\n' >"$work/slow.script"
sink=$(server sink)
grey=$(server grey -s "$work/grey.script")
slow=$(server slow -s "$work/slow.script")
down=$((sink == 65535 ? sink - 1 : sink + 1))

printf '127.0.0.1 mx1.example.net\n127.0.0.1 mx.stuck.example\n127.0.0.1 mx.grey.example\n127.0.0.1 mx.slow.example\n' >"$work/hosts"
mkdir -m 700 "$work/spool"
cat >"$work/qkit.conf" <<EOC
spool_directory = $work/spool
hosts_file = $work/hosts
primary_hostname = mail.client.example
route example.net = mx1.example.net:$sink
route stuck.example = mx.stuck.example:$down
route grey.example = mx.grey.example:$grey
route slow.example = mx.slow.example:$slow
final_timeout = 60s
EOC
conf="$work/qkit.conf"

submit() {
	# submit FROM SUBJECT SIZE RCPT...
	from=$1 subj=$2 size=$3
	shift 3
	{
		printf 'From: <%s>\nSubject: %s\nDate: Tue, 25 Nov 2026 09:00:00 +0000\n\n' "$from" "$subj"
		printf 'Hello,\n\nthis is a demo message for the qtop screenshots.\n'
		n=0
		while [ "$n" -lt "$size" ]; do
			printf 'The quick brown fox jumps over the lazy dog, line %d.\n' "$n"
			n=$((n + 1))
		done
	} | "$qctl" -C "$conf" submit -f "$from" "$@"
}

submit alice@example.org "Quarterly report" 40 bob@example.net >/dev/null
submit billing@shop.example "Your invoice 2291" 12 anne@stuck.example >/dev/null
submit billing@shop.example "Your invoice 2292" 12 carl@stuck.example dora@stuck.example >/dev/null
submit news@list.example "Weekly digest" 200 ed@grey.example fay@grey.example gus@example.net >/dev/null
submit news@list.example "Weekly digest" 200 hal@grey.example >/dev/null
submit "" "Undelivered Mail Returned to Sender" 8 postmaster@stuck.example >/dev/null
submit ops@example.org "disk full on db3" 3 oncall@stuck.example >/dev/null
submit joerg@example.org "Grüße aus Köln" 5 ida@grey.example >/dev/null
printf 'From: <x@example.org>\nSubject: \033[31mred\033]0;title\007 text\n\nbody\n' |
	"$qctl" -C "$conf" submit -f prank@example.org jan@stuck.example >/dev/null
for i in 1 2 3 4 5 6; do
	submit "sales$i@shop.example" "Offer $i" $((i * 7)) "kim$i@grey.example" "lou$i@stuck.example" >/dev/null
done
# one queue run: example.net delivered, the others deferred
"$qrun" -C "$conf" >/dev/null 2>&1 || true
frozen1=$(submit bulk@spam.example "You have won" 2 max@stuck.example)
frozen2=$(submit bulk@spam.example "You have won again" 2 ned@stuck.example)
"$qctl" -C "$conf" freeze "$frozen1" "$frozen2" >/dev/null
submit alice@example.org "Re: Quarterly report" 30 bob@example.net >/dev/null
submit carol@example.org "Slow partner" 25 pat@slow.example >/dev/null

tm() { tmux -L "$sock" -f /dev/null "$@"; }

# wait for a text on the screen (at most 10 s)
wait_for() {
	i=0
	while [ "$i" -lt 200 ]; do
		if tm capture-pane -p -t shot | grep -F -q -- "$1"; then
			return 0
		fi
		sleep 0.05
		i=$((i + 1))
	done
	echo "qtop-shots: \"$1\" did not appear; the screen was:" >&2
	tm capture-pane -p -t shot >&2
	exit 1
}

shot() {
	# shot FILE TITLE
	{
		printf '%s\n' "$2"
		printf '(tmux capture-pane of qtop on a demo spool; tools/qtop-shots.sh makes it again)\n\n'
		tm capture-pane -p -t shot
	} >"$top/doc/$1"
	echo "qtop-shots: doc/$1"
}

start() {
	# start WIDTH HEIGHT (a new server each time: one being killed may
	# still hold its socket for a moment)
	tm kill-server 2>/dev/null || true
	sock="qtop-shots-$$-$1x$2"
	tm new-session -d -x "$1" -y "$2" -s shot -- env TERM=screen LANG=C.UTF-8 LC_ALL= \
		TZ=UTC "$qtop" -C "$conf"
	wait_for "Queue "
	sleep 1.2                      # the first cross-check and a refresh
}

start 110 32
"$qtop" -C "$conf" --once >"$top/doc/qtop-once.txt"
echo "qtop-shots: doc/qtop-once.txt"
wait_for "frozen"
shot qtop-queue.txt "qtop: the Queue view, 110x32"

tm send-keys -t shot s
wait_for "DOMAIN"
shot qtop-domains.txt "qtop: the per-domain summary (key s), 110x32"
tm send-keys -t shot s

# the message with the hostile subject
tm send-keys -t shot / && tm send-keys -t shot -l -- prank && tm send-keys -t shot Enter
wait_for "1 message match"
tm send-keys -t shot Enter
wait_for "Envelope"
shot qtop-message.txt "qtop: the message pager (Enter), 110x32; a subject with escape sequences"
tm send-keys -t shot q Escape

tm send-keys -t shot 2
wait_for "T:mx.stuck.example"
wait_for "waiting:"
shot qtop-retry.txt "qtop: the Retry view (key 2), 110x32"

# a live session: a run that sits on the slow server's final dot
"$qrun" -C "$conf" -R slow.example >/dev/null 2>&1 &
pids="$pids $!"
tm send-keys -t shot 3
wait_for "mx.slow.example"
sleep 1.2
shot qtop-sessions.txt "qtop: the Sessions view (key 3), 110x32, while a delivery waits for the server"

tm send-keys -t shot '?'
wait_for "Everywhere"
shot qtop-help.txt "qtop: the help (key ?), 110x32"
tm send-keys -t shot Escape 1

start 80 24
wait_for "Queue "
shot qtop-queue-80x24.txt "qtop: the Queue view in 80x24"
tm kill-server 2>/dev/null || true

