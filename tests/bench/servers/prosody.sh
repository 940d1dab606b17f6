#!/usr/bin/env bash
# Private Prosody instance for the side-by-side benchmark.
#   prosody.sh start DIR PORT   prints Prosody's PID once it serves c2s on PORT
#   prosody.sh stop DIR         stops it and waits for it to exit
# Config: prosody.cfg.lua.in beside this script, written into DIR.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

start() {
	local dir=$1 port=$2 pid
	command -v prosody >/dev/null || die "prosody is not installed (apt-get install -y prosody)"
	mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
	port_in_use "$port" && die "port $port is already in use"
	mkdir -p "$dir/data"
	make_cert "$dir"
	sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@DOMAIN@|$BENCH_DOMAIN|g" \
		"$here/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
	(cd "$dir" && exec setsid taskset -c "$BENCH_CPU" prosody --config "$dir/prosody.cfg.lua" -F \
		</dev/null >>"$dir/prosody.out" 2>&1) &
	pid=$!
	started "$pid" "$port" "$dir"
}

case "${1:-}" in
start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop_dir "$2" ;;
*) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
