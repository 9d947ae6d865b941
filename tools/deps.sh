#!/bin/sh
# tools/deps.sh [build|test|all] - install the Debian packages qkit needs
# that are missing (default: build).  Run as root on Debian 12; prints one
# line saying what it installs or that everything is present.  Not root
# and something missing: prints the apt-get command to run, exits 1.
#
# The lists: add packages here (plain words, space separated).
#   DEPS_BUILD  ./configure && make
#   DEPS_TEST   make check (added to DEPS_BUILD for "test" and "all");
#               clang and libclang-rt-14-dev (libFuzzer) for the fuzz
#               targets that make check runs in CI
#   DEPS_EXTRA  extra tools for benchmarks, demos, interop (only "all")
# "test" also extracts Postfix's smtp-sink into build/peers (the postfix
# package conflicts with exim4, so it is unpacked, never installed), and
# installs exim4 without letting its package start a system daemon: the
# tests run their own Exim on a loopback port.
DEPS_BUILD="gcc libc6-dev make autoconf pkg-config libdb-dev libssl-dev libncurses-dev libcunit1-dev"
DEPS_TEST="openssl tmux valgrind ca-certificates exim4-daemon-light clang libclang-rt-14-dev"
DEPS_EXTRA=""

set -eu

mode=${1:-build}
case "$mode" in
build) want="$DEPS_BUILD" ;;
test)  want="$DEPS_BUILD $DEPS_TEST" ;;
all)   want="$DEPS_BUILD $DEPS_TEST $DEPS_EXTRA" ;;
-h|--help)
	echo "usage: sh tools/deps.sh [build|test|all]"
	exit 0 ;;
*)
	echo "usage: sh tools/deps.sh [build|test|all]" >&2
	exit 64 ;;
esac
# shellcheck disable=SC2086,SC2116 # squeeze the blanks of the lists
want=$(echo $want)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: this is not a Debian system (no dpkg-query/apt-get); install by hand: $want" >&2
	exit 1
fi

missing=""
for p in $want; do
	case " $missing " in *" $p "*) continue ;; esac
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*" ok installed") ;;
	*) missing="${missing:+$missing }$p" ;;
	esac
done

# Postfix's smtp-sink, unpacked from the Debian package into build/peers.
peers() {
	case "$mode" in test|all) ;; *) return 0 ;; esac
	[ -x build/peers/usr/sbin/smtp-sink ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: build/peers/usr/sbin/smtp-sink is missing; as root run: sh tools/deps.sh test" >&2
		exit 1
	fi
	echo "deps: unpacking smtp-sink from the postfix package into build/peers"
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/qkit-peers.XXXXXX")
	if ! (cd "$tmp" && apt-get -q download postfix >/dev/null 2>&1); then
		apt-get -q update >/dev/null 2>&1 || true
		(cd "$tmp" && apt-get -q download postfix >/dev/null) || {
			echo "deps: apt-get download postfix failed" >&2; rm -rf "$tmp"; exit 1; }
	fi
	mkdir -p build/peers
	dpkg -x "$tmp"/postfix_*.deb build/peers
	rm -rf "$tmp"
	[ -x build/peers/usr/sbin/smtp-sink ] || { echo "deps: no smtp-sink in the postfix package" >&2; exit 1; }
}

if [ -z "$missing" ]; then
	echo "deps: all present ($want)"
	peers
	exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing: $missing" >&2
	echo "deps: run as root:  $cmd" >&2
	exit 1
fi

echo "deps: installing: $missing"
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start system daemons (exim4 would take port
# 25): a policy-rc.d that says no, only while we install, only if none.
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	policy=/usr/sbin/policy-rc.d
fi
trap '[ -n "$policy" ] && rm -f "$policy"' EXIT
log=$(mktemp "${TMPDIR:-/tmp}/qkit-deps.XXXXXX")
if ! apt-get -q update >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "deps: apt-get update failed" >&2
	exit 1
fi
# shellcheck disable=SC2086 # word splitting of the package list is wanted
if ! apt-get -q install -y --no-install-recommends $missing >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "deps: apt-get install failed: $missing" >&2
	exit 1
fi
rm -f "$log"
echo "deps: installed: $missing"
peers
