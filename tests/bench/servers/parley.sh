#!/usr/bin/env bash
# Private Parley instance for the side-by-side benchmark.
#   parley.sh start DIR PORT   prints parleyd's PID once it serves c2s on PORT
#   parley.sh stop DIR         stops it and waits for it to exit
# Environment: PARLEY_BUILD (default: <repo>/build), BENCH_DOMAIN (localhost).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
repo=$(cd "$here/../../.." && pwd)
build=${PARLEY_BUILD:-$repo/build}

start() {
	local dir=$1 port=$2 parleyd pid
	parleyd=$build/src/parleyd
	[ -x "$build/parleyd" ] && parleyd=$build/parleyd
	if [ ! -x "$parleyd" ]; then
		(cd "$build" && make -j2 >&2) || die "cannot build parleyd in $build"
		[ -x "$build/src/parleyd" ] && parleyd=$build/src/parleyd
	fi
	[ -x "$parleyd" ] || die "no parleyd in $build"
	mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
	port_in_use "$port" && die "port $port is already in use"
	make_cert "$dir"

	# Equivalent to the Prosody/ejabberd set-up: open in-band registration
	# with its per-address limit at the maximum, no read-rate limit, plain
	# text allowed on loopback (STARTTLS offered), durable storage (fsync),
	# the same self-signed certificate.  Direct TLS is off (tls-port 0).
	cat >"$dir/parley.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<parley>
  <log level="warn" target="$dir/parleyd.log"/>
  <storage path="$dir/store" durability="fsync"/>
  <control socket="$dir/parleyd.sock"/>
  <server pidfile="$dir/parleyd.pid"/>
  <c2s address="127.0.0.1" port="$port" tls-port="0"
       allow-plaintext-loopback="true" max-bytes-per-second="0" max-stanzas-per-second="0"
       max-resources="1000"/>
  <host name="$BENCH_DOMAIN">
    <certificate file="$dir/cert.pem" key="$dir/key.pem"/>
  </host>
  <modules path="$build/modules/.libs">
    <module name="blocking"/>
    <module name="dedup"/>
    <module name="disco"/>
    <module name="last"/>
    <!-- The room archive (one fsync'd write per groupchat message: the
         others keep no room history here); one-to-one chats unarchived,
         as on the other servers. -->
    <module name="mam" default-policy="never"/>
    <module name="muc" max-occupants="10000" default-max-occupants="10000"
            max-rooms-per-user="10000" message-rate="100000" message-burst="100000"
            default-history="0"/>
    <module name="offline" max-messages="100000"/>
    <module name="ping"/>
    <module name="private"/>
    <module name="register" open="true" per-address-per-hour="100000"/>
    <module name="roster"/>
    <module name="time"/>
    <module name="vcard"/>
    <module name="version"/>
  </modules>
</parley>
XML
	"$parleyd" --check-config "$dir/parley.xml" >"$dir/check-config.log" 2>&1 ||
		{ cat "$dir/check-config.log" >&2; die "configuration refused"; }
	(cd "$dir" && exec setsid taskset -c "$BENCH_CPU" "$parleyd" -c "$dir/parley.xml" \
		</dev/null >>"$dir/parleyd.log" 2>&1) &
	pid=$!
	started "$pid" "$port" "$dir"
}

case "${1:-}" in
start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop_dir "$2" ;;
*) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
