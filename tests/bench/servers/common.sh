# Shared helpers for tests/bench/servers/*.sh (sourced, not run).
# Every server is started in its own directory DIR on 127.0.0.1, pinned to
# CPU 0, and its main PID is written to DIR/server.pid.

BENCH_DOMAIN=${BENCH_DOMAIN:-localhost}
BENCH_CPU=${BENCH_CPU:-0}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# port_in_use PORT: true if something listens on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# make_cert DIR: a self-signed certificate for $BENCH_DOMAIN (and
# conference.$BENCH_DOMAIN) in DIR/cert.pem and DIR/key.pem.
make_cert() {
	local dir=$1
	[ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ] && return 0
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
		-keyout "$dir/key.pem" -out "$dir/cert.pem" \
		-subj "/CN=$BENCH_DOMAIN" \
		-addext "subjectAltName=DNS:$BENCH_DOMAIN,DNS:conference.$BENCH_DOMAIN" \
		>/dev/null 2>&1 || die "openssl could not make a certificate in $dir"
	chmod 600 "$dir/key.pem"
}

# xmpp_probe PORT [TIMEOUT_S]: open a client stream to 127.0.0.1:PORT and
# print what the server answered up to and including <stream:features>.
# Exit 0 only if features arrived: the server is really serving c2s.
xmpp_probe() {
	python3 - "$1" "${2:-2}" "$BENCH_DOMAIN" <<'PY'
import socket, sys, time
port, timeout, domain = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
               "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
               % domain).encode())
    buf, deadline = b"", time.time() + timeout
    while b"</stream:features>" not in buf and time.time() < deadline:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    try:
        s.sendall(b"</stream:stream>")
    except OSError:
        pass
    s.close()
    sys.stdout.write(buf.decode("utf-8", "replace") + "\n")
    sys.exit(0 if b"</stream:features>" in buf else 1)
except OSError:
    sys.exit(1)
PY
}

# wait_ready PID PORT DIR: poll (every 0.1 s) until the server answers a
# stream on PORT with its features, or PID died, or BENCH_START_TIMEOUT.
# Records the answer in DIR/stream-header.txt and the time it took in
# DIR/startup-seconds.
wait_ready() {
	local pid=$1 port=$2 dir=$3 t0 now
	t0=$(date +%s.%N)
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$(basename "$0"): server (pid $pid) exited during start-up; log in $dir" >&2
			return 1
		fi
		if port_in_use "$port" && xmpp_probe "$port" 2 >"$dir/stream-header.txt" 2>/dev/null; then
			now=$(date +%s.%N)
			awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f\n", b - a }' >"$dir/startup-seconds"
			return 0
		fi
		now=$(date +%s.%N)
		if awk -v a="$t0" -v b="$now" -v t="$BENCH_START_TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
			echo "$(basename "$0"): server (pid $pid) not ready on port $port after ${BENCH_START_TIMEOUT}s; log in $dir" >&2
			return 1
		fi
		sleep 0.1
	done
}

# stop_pid PID [TIMEOUT_S]: SIGTERM, wait for exit, SIGKILL after TIMEOUT.
stop_pid() {
	local pid=$1 timeout=${2:-20} i=0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	while kill -0 "$pid" 2>/dev/null; do
		# A zombie child of ours counts as gone.
		[ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
		i=$((i + 1))
		if [ $i -gt $((timeout * 10)) ]; then
			kill -KILL "$pid" 2>/dev/null
			sleep 0.2
			break
		fi
		sleep 0.1
	done
	return 0
}

# stop_dir DIR: stop the server whose PID is in DIR/server.pid.
stop_dir() {
	local dir=$1 pid
	[ -f "$dir/server.pid" ] || return 0
	pid=$(cat "$dir/server.pid")
	[ -n "$pid" ] && stop_pid "$pid" "${2:-20}"
	rm -f "$dir/server.pid"
}

# started PID PORT DIR: common tail of every start: wait, record, print PID.
started() {
	local pid=$1 port=$2 dir=$3
	echo "$pid" >"$dir/server.pid"
	if ! wait_ready "$pid" "$port" "$dir"; then
		stop_dir "$dir" 5
		tail -n 30 "$dir"/*.log "$dir"/log/*.log 2>/dev/null >&2
		return 1
	fi
	echo "$pid"
}
