#!/usr/bin/env bash
# Private ejabberd instance for the side-by-side benchmark.
#   ejabberd.sh start DIR PORT   prints the Erlang VM's (beam.smp) PID once
#                                ejabberd serves c2s on PORT
#   ejabberd.sh stop DIR         stops it and waits for it to exit
# The VM is started directly (not through ejabberdctl), as the current user,
# without Erlang distribution, so no epmd is started and nothing is shared
# with a system ejabberd. Config: ejabberd.yml.in beside this script.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT_EJABBERD:-120}

ejabberd_libs() {
	local d
	for d in /usr/lib/x86_64-linux-gnu /usr/lib/*-linux-gnu /usr/lib/erlang/lib; do
		ls -d "$d"/ejabberd-* >/dev/null 2>&1 && { echo "$d"; return 0; }
	done
	return 1
}

start() {
	local dir=$1 port=$2 pid libs
	command -v erl >/dev/null && libs=$(ejabberd_libs) ||
		die "ejabberd is not installed (apt-get install -y ejabberd)"
	mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
	port_in_use "$port" && die "port $port is already in use"
	mkdir -p "$dir/spool" "$dir/log"
	make_cert "$dir"
	sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@DOMAIN@|$BENCH_DOMAIN|g" \
		"$here/ejabberd.yml.in" >"$dir/ejabberd.yml"
	# The same VM settings as ejabberdctl (kernel poll, 250000 processes,
	# 32000 ports).
	(
		cd "$dir" || exit 1
		export HOME="$dir" ERL_LIBS="$libs" ERL_MAX_PORTS=32000 ERL_MAX_ETS_TABLES=1400 \
			EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" \
			EJABBERD_LOG_PATH="$dir/log/ejabberd.log" \
			ERL_CRASH_DUMP="$dir/log/erl_crash.dump" ERL_CRASH_DUMP_BYTES=0
		exec setsid taskset -c "$BENCH_CPU" erl -noinput +K true +P 250000 \
			-mnesia dir "\"$dir/spool\"" -s ejabberd \
			</dev/null >>"$dir/log/erl.out" 2>&1
	) &
	pid=$!
	started "$pid" "$port" "$dir"
}

case "${1:-}" in
start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop_dir "$2" 30 ;;
*) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
