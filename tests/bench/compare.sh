#!/usr/bin/env bash
# Side-by-side benchmark: Parley against Prosody and ejabberd, each run as a
# private instance on 127.0.0.1 with equivalent settings (see README), driven
# by tests/bench/parley-load.  See `compare.sh --help`.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

SERVERS="parley prosody ejabberd"
TLS_MODES="none starttls"
PHASES="register login idle msg muc offline"
USERS=1000
CONCURRENCY=50
RATE=1000
DURATION=10
IDLE_SECONDS=10
PAIRS=50
OCCUPANTS=50
SENDERS=5
MESSAGES=1000
TOOL_TIMEOUT=300
DOMAIN=${BENCH_DOMAIN:-localhost}
PASSWORD=bench-secret
RESULTS=""
KEEP=0
IDLE_RESTART=1
CHECK_ONLY=0
INSTALL=1
REPORT=""

usage() {
	cat <<EOF
usage: tests/bench/compare.sh [options]
  --servers "LIST"   servers to run, from: parley prosody ejabberd (default: all)
  --tls "LIST"       TLS modes, from: none starttls (default: both)
  --phases "LIST"    from: register login idle msg muc offline (default: all)
  --users N          accounts registered / logged in / held idle (default $USERS)
  --concurrency C    parallel logins and registrations (default $CONCURRENCY)
  --rate R           offered message rate of the msg and muc phases (default $RATE)
  --duration S       length of the msg and muc phases (default $DURATION)
  --idle-seconds S   how long the idle phase holds its sessions (default $IDLE_SECONDS)
  --pairs P          sender/receiver pairs in the msg phase (default $PAIRS)
  --occupants K      room occupants in the muc phase (default $OCCUPANTS)
  --senders S        occupants that talk in the muc phase (default $SENDERS)
  --messages M       messages queued in the offline phase (default $MESSAGES)
  --timeout S        per-run timeout handed to the load tool (default $TOOL_TIMEOUT)
  --domain D         XMPP domain of all servers (default $DOMAIN)
  --results FILE     JSON lines are appended here (default tests/bench/results/<date>.jsonl)
  --check            only start, probe and stop each server (start-up time, idle RSS)
  --no-install       do not apt-get install missing packages
  --no-idle-restart  run the idle phase on the server as the earlier phases left it
                     (default: restart it first, keeping its store)
  --report RUN       only print the table of an earlier run from the results file
                     (RUN: its bench_run id, or "last")
  --keep             keep the servers' temporary directories (logs, data)
Each server runs pinned to CPU 0, the load tool to CPU 1. Every phase that
fails shows n/a in the table; the script goes on with the next.
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--servers) SERVERS=$2; shift 2 ;;
	--tls) TLS_MODES=$2; shift 2 ;;
	--phases) PHASES=$2; shift 2 ;;
	--users) USERS=$2; shift 2 ;;
	--concurrency) CONCURRENCY=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--idle-seconds) IDLE_SECONDS=$2; shift 2 ;;
	--pairs) PAIRS=$2; shift 2 ;;
	--occupants) OCCUPANTS=$2; shift 2 ;;
	--senders) SENDERS=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--timeout) TOOL_TIMEOUT=$2; shift 2 ;;
	--domain) DOMAIN=$2; shift 2 ;;
	--results) RESULTS=$2; shift 2 ;;
	--check) CHECK_ONLY=1; shift ;;
	--no-install) INSTALL=0; shift ;;
	--keep) KEEP=1; shift ;;
	--report) REPORT=$2; shift 2 ;;
	--no-idle-restart) IDLE_RESTART=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done
export BENCH_DOMAIN=$DOMAIN

for s in $SERVERS; do
	case $s in parley | prosody | ejabberd) ;; *) echo "compare.sh: unknown server $s" >&2; exit 2 ;; esac
done
for t in $TLS_MODES; do
	case $t in none | starttls | direct) ;; *) echo "compare.sh: unknown TLS mode $t" >&2; exit 2 ;; esac
done

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- set-up

apt_install() {
	[ "$INSTALL" = 1 ] || { log "missing packages: $* (--no-install given)"; return 1; }
	[ "$(id -u)" = 0 ] || { log "missing packages: $* (need root to install)"; return 1; }
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}

# The Debian packages start (or try to start) system-wide services on
# install; stop and disable them so that they hold no ports (5222, 5269,
# 5280, 5443, ...) and take no CPU during the benchmark. Only processes of
# the packages' own system users are touched: the private instances below
# run as the current user.
stop_system_services() {
	local svc user pids
	for svc in prosody ejabberd; do
		user=$svc
		[ -e "/etc/init.d/$svc" ] || [ -e "/lib/systemd/system/$svc.service" ] || continue
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
			systemctl disable --now "$svc" >/dev/null 2>&1
		else
			command -v update-rc.d >/dev/null && update-rc.d "$svc" disable >/dev/null 2>&1
		fi
		id -u "$user" >/dev/null 2>&1 || continue
		pids=$(pgrep -u "$user" 2>/dev/null | tr '\n' ' ')
		[ -n "$pids" ] || continue
		log "stopping the system $svc service (pids $pids)"
		timeout 60 service "$svc" stop >/dev/null 2>&1
		pids=$(pgrep -u "$user" 2>/dev/null | tr '\n' ' ')
		[ -n "$pids" ] && kill $pids 2>/dev/null && sleep 1
		pids=$(pgrep -u "$user" 2>/dev/null | tr '\n' ' ')
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	done
	local port
	for port in 5222 5223 5269 5280 5443; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			log "warning: something still listens on port $port (not ours; the private instances use other ports)"
		fi
	done
}

ensure_tools() {
	local need=()
	command -v python3 >/dev/null || need+=(python3)
	command -v taskset >/dev/null || need+=(util-linux)
	command -v openssl >/dev/null || need+=(openssl)
	command -v jq >/dev/null || need+=(jq)
	for s in $SERVERS; do
		case $s in
		prosody) command -v prosody >/dev/null || need+=(prosody) ;;
		ejabberd) compgen -G '/usr/lib/*/ejabberd-*' >/dev/null || compgen -G '/usr/lib/erlang/lib/ejabberd-*' >/dev/null ||
			need+=(ejabberd) ;;
		esac
	done
	if [ ${#need[@]} -gt 0 ]; then
		apt_install "${need[@]}" || log "could not install ${need[*]}; the servers that need them will show n/a"
	fi
	stop_system_services
	if [ "$(nproc)" -lt 2 ]; then
		log "warning: fewer than 2 CPUs; server and load tool will share CPU 0"
		export BENCH_CPU=0 TOOL_CPU=0
	fi
}

TOOL=${PARLEY_LOAD:-$here/parley-load}
build_tool() {
	local src=$here/parley-load.c
	[ -n "${PARLEY_LOAD:-}" ] && src=/nonexistent  # given explicitly: used as it is
	if [ -f "$src" ] && { [ ! -x "$TOOL" ] || [ "$src" -nt "$TOOL" ]; }; then
		log "building $TOOL"
		(cd "$repo" && gcc -std=c11 -O2 -D_GNU_SOURCE -o tests/bench/parley-load tests/bench/parley-load.c \
			$(pkg-config --cflags --libs libevent libevent_openssl openssl expat) -lm) >&2 ||
			log "parley-load did not build; using the existing binary, if any"
	fi
	[ -x "$TOOL" ] || { log "no load tool: $TOOL (nor $src to build it from)"; return 1; }
}

# ---------------------------------------------------------------- servers

WORK=$(mktemp -d "${TMPDIR:-/tmp}/parley-bench.XXXXXX")
STARTED=()      # "name dir" of every running server

stop_server() {  # NAME DIR
	"$here/servers/$1.sh" stop "$2" >&2
}

TOOL_PID=
cleanup() {
	local entry
	trap - EXIT INT TERM
	if [ -n "$TOOL_PID" ]; then
		kill -TERM "$TOOL_PID" 2>/dev/null
		wait "$TOOL_PID" 2>/dev/null
	fi
	for entry in "${STARTED[@]+"${STARTED[@]}"}"; do
		log "stopping ${entry%% *}"
		stop_server ${entry}
	done
	STARTED=()
	if [ "$KEEP" = 1 ]; then
		log "server directories kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'log "interrupted"; cleanup; exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# ---------------------------------------------------------------- results

RUN_ID=$(date +%Y%m%dT%H%M%S)-$$
if [ -z "$RESULTS" ]; then
	mkdir -p "$here/results"
	[ -f "$here/results/.gitignore" ] || printf '*.jsonl\n' >"$here/results/.gitignore"
	RESULTS=$here/results/$(date +%Y-%m-%d).jsonl
fi
mkdir -p "$(dirname "$RESULTS")"
THIS_RUN=$WORK/results.jsonl
: >"$THIS_RUN"

# record SERVER TLS STEP JSON: add the run's context and append the line.
record() {
	python3 - "$1" "$2" "$3" "$4" "$RUN_ID" "$USERS" >>"$THIS_RUN" <<'PY' || return 1
import json, sys
server, tls, step, line, run, users = sys.argv[1:7]
try:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
except ValueError as e:
    obj = {"error": "unparsable tool output: %s" % (line[:200] or "(none)")}
obj.update({"bench_run": run, "bench_server": server, "bench_tls": tls,
            "bench_step": step, "bench_users": int(users)})
print(json.dumps(obj, separators=(",", ":")))
PY
	tail -n 1 "$THIS_RUN" >>"$RESULTS"
}

# run_tool SERVER TLS STEP PORT PID ARGS...: one load-tool run; its JSON
# line is recorded whatever happened.
run_tool() {
	local server=$1 tls=$2 step=$3 port=$4 pid=$5 out rc
	shift 5
	local errf=$WORK/$server-$tls-$step.stderr
	local outf=$WORK/$server-$tls-$step.stdout
	log "$server/$tls: $step"
	# In the background and waited for, so that Ctrl-C runs the trap at
	# once (bash defers traps while a foreground command runs).
	timeout --kill-after=10 $((TOOL_TIMEOUT + 60)) taskset -c "${TOOL_CPU:-1}" "$TOOL" \
		--host 127.0.0.1 --port "$port" --domain "$DOMAIN" --password "$PASSWORD" \
		--tls "$tls" --label "$server" --timeout "$TOOL_TIMEOUT" "$@" \
		</dev/null >"$outf" 2>"$errf" &
	TOOL_PID=$!
	wait "$TOOL_PID"
	rc=$?
	TOOL_PID=
	out=$(cat "$outf")
	out=$(printf '%s\n' "$out" | grep '^{' | tail -n 1)
	if [ -z "$out" ]; then
		out=$(python3 -c 'import json,sys; print(json.dumps({"tool":"parley-load","server":sys.argv[1],"phase":sys.argv[2],"error":"no JSON output (exit %s): %s" % (sys.argv[3], sys.argv[4][-300:])}))' \
			"$server" "$step" "$rc" "$(tail -c 300 "$errf" 2>/dev/null)")
	fi
	record "$server" "$tls" "$step" "$out"
	case $out in *'"error"'*) log "$server/$tls: $step failed: $(printf '%s' "$out" | cut -c1-300)" ;; esac
	return 0
}

# bench_server SERVER TLS: a fresh private instance, every phase, stop.
bench_server() {
	local server=$1 tls=$2 dir port pid t0 t1 startup rss
	dir=$WORK/$server-$tls
	mkdir -p "$dir"
	port=$(free_port)
	log "$server/$tls: starting on 127.0.0.1:$port in $dir"
	t0=$(date +%s.%N)
	STARTED+=("$server $dir")  # before the start: an interrupted start is stopped too
	pid=$("$here/servers/$server.sh" start "$dir" "$port")
	if [ -z "$pid" ]; then
		record "$server" "$tls" start '{"tool":"compare.sh","phase":"start","error":"server did not start"}'
		return 0
	fi
	t1=$(date +%s.%N)
	startup=$(cat "$dir/startup-seconds" 2>/dev/null || awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	rss=$(rss_kib "$pid")
	log "$server/$tls: pid $pid, ready after ${startup}s, RSS ${rss} KiB"
	record "$server" "$tls" start "{\"tool\":\"compare.sh\",\"server\":\"$server\",\"phase\":\"start\",\"pid\":$pid,\"startup_seconds\":$startup,\"rss_kb\":${rss:-null}}"

	if [ "$CHECK_ONLY" = 0 ]; then
		local total=$USERS
		[ "$total" -ge 2 ] || total=2
		local muc_users=$OCCUPANTS
		[ "$muc_users" -ge "$SENDERS" ] || muc_users=$SENDERS
		local p
		for p in $PHASES; do
			case $p in
			register)
				run_tool "$server" "$tls" register "$port" "$pid" --phase register \
					--user-prefix u --users "$total" --first-user 0 --concurrency "$CONCURRENCY" ;;
			login)
				run_tool "$server" "$tls" login "$port" "$pid" --phase login \
					--user-prefix u --users "$total" --first-user 0 --concurrency "$CONCURRENCY" ;;
			idle)
				# Measured on a freshly restarted server (same store), so that
				# memory the allocator kept from the earlier phases does not
				# hide the cost of the held sessions.
				if [ "$IDLE_RESTART" = 1 ]; then
					log "$server/$tls: restarting before idle"
					stop_server "$server" "$dir"
					pid=$("$here/servers/$server.sh" start "$dir" "$port")
					if [ -z "$pid" ]; then
						record "$server" "$tls" idle '{"tool":"compare.sh","phase":"idle","error":"server did not restart"}'
						break
					fi
					rss=$(rss_kib "$pid")
					record "$server" "$tls" restart "{\"tool\":\"compare.sh\",\"server\":\"$server\",\"phase\":\"restart\",\"pid\":$pid,\"startup_seconds\":$(cat "$dir/startup-seconds" 2>/dev/null || echo null),\"rss_kb\":${rss:-null}}"
				fi
				run_tool "$server" "$tls" idle "$port" "$pid" --phase idle \
					--user-prefix u --users "$total" --first-user 0 --concurrency "$CONCURRENCY" \
					--duration "$IDLE_SECONDS" --server-pid "$pid" ;;
			msg)
				# Own accounts m0..m(2P-1), registered first (not timed in the table).
				run_tool "$server" "$tls" setup-msg "$port" "$pid" --phase register \
					--user-prefix m --users $((2 * PAIRS)) --first-user 0 --concurrency "$CONCURRENCY"
				run_tool "$server" "$tls" msg "$port" "$pid" --phase msg \
					--user-prefix m --pairs "$PAIRS" --users $((2 * PAIRS)) --rate "$RATE" \
					--duration "$DURATION" --concurrency "$CONCURRENCY" --server-pid "$pid" ;;
			muc)
				run_tool "$server" "$tls" setup-muc "$port" "$pid" --phase register \
					--user-prefix c --users "$muc_users" --first-user 0 --concurrency "$CONCURRENCY"
				run_tool "$server" "$tls" muc "$port" "$pid" --phase muc \
					--user-prefix c --users "$muc_users" --room "bench@conference.$DOMAIN" \
					--occupants "$OCCUPANTS" --senders "$SENDERS" --rate "$RATE" \
					--duration "$DURATION" --concurrency "$CONCURRENCY" --server-pid "$pid" ;;
			offline)
				run_tool "$server" "$tls" setup-offline "$port" "$pid" --phase register \
					--user-prefix o --users 2 --first-user 0 --concurrency 2
				run_tool "$server" "$tls" offline "$port" "$pid" --phase offline \
					--user-prefix o --users 2 --messages "$MESSAGES" --server-pid "$pid" ;;
			*) log "unknown phase $p (skipped)" ;;
			esac
			if ! kill -0 "$pid" 2>/dev/null; then
				log "$server/$tls: the server died during $p; remaining phases skipped"
				record "$server" "$tls" died "{\"tool\":\"compare.sh\",\"server\":\"$server\",\"phase\":\"died\",\"error\":\"server exited during $p\"}"
				break
			fi
		done
		rss=$(rss_kib "$pid")
		record "$server" "$tls" end "{\"tool\":\"compare.sh\",\"server\":\"$server\",\"phase\":\"end\",\"rss_kb\":${rss:-null}}"
	fi

	log "$server/$tls: stopping"
	stop_server "$server" "$dir"
	local kept=()
	for entry in "${STARTED[@]}"; do [ "$entry" = "$server $dir" ] || kept+=("$entry"); done
	STARTED=("${kept[@]+"${kept[@]}"}")
}

# ---------------------------------------------------------------- table

print_table() {
	python3 - "$THIS_RUN" "$SERVERS" "$TLS_MODES" <<'PY'
import json, sys
path, servers, modes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = {}
for line in open(path):
    try:
        o = json.loads(line)
    except ValueError:
        continue
    rows[(o["bench_server"], o["bench_tls"], o["bench_step"])] = o

def ok(o):
    return o is not None and "error" not in o

def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

def per_second(o):
    return num(o.get("per_second"))

def rate_of(o, *keys):
    for k in keys:
        if num(o.get(k)) is not None:
            return o[k]
    d, s = num(o.get("delivered")), num(o.get("seconds"))
    return d / s if d is not None and s else None

def msg_rate(o):
    return rate_of(o, "msgs_per_s", "per_second")

def muc_rate(o):
    return rate_of(o, "deliveries_per_s")

def p99(o):
    return num((o.get("latency_ms") or {}).get("p99"))

# (label, step, getter, higher is better)
metrics = [
    ("logins/s", "login", per_second, True),
    ("register/s", "register", per_second, True),
    ("msgs/s", "msg", msg_rate, True),
    ("msg p99 ms", "msg", p99, False),
    ("idle KiB/session", "idle", lambda o: num(o.get("server_kb_per_session")), False),
    ("muc deliveries/s", "muc", muc_rate, True),
    ("offline drain s", "offline", lambda o: num(o.get("drain_seconds")), False),
    ("start-up s", "start", lambda o: num(o.get("startup_seconds")), False),
    ("restart s (full store)", "restart", lambda o: num(o.get("startup_seconds")), False),
    ("RSS at start MiB", "start", lambda o: num(o.get("rss_kb")) and o["rss_kb"] / 1024, False),
    ("RSS at end MiB", "end", lambda o: num(o.get("rss_kb")) and o["rss_kb"] / 1024, False),
]

def fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v

partial = False
for mode in modes:
    present = [s for s in servers if (s, mode, "start") in rows]
    if not present:
        continue
    others = [s for s in present if s != "parley"]
    head = ["metric (tls=%s)" % mode] + present
    if "parley" in present and others:
        head.append("parley/best-other")
    table = [head]
    steps = {k[2] for k in rows if k[1] == mode}
    for label, step, get, higher in metrics:
        if step not in steps:
            continue
        vals, cells = {}, [label]
        for s in present:
            o = rows.get((s, mode, step))
            v = get(o) if ok(o) else None
            vals[s] = v
            cell = fmt(v)
            if v is not None and num(o.get("failed")):
                cell += "*"
                partial = True
            cells.append(cell)
        if len(head) > len(present) + 1:
            p = vals.get("parley")
            best = [vals[s] for s in others if vals[s] is not None]
            if p is None or not best:
                cells.append("n/a")
            elif higher:
                cells.append("%.2fx" % (p / max(best)) if max(best) else "n/a")
            else:
                cells.append("%.2fx" % (min(best) / p) if p else "n/a")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    print()
    for i, r in enumerate(table):
        print("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
print()
print("ratio > 1 means Parley is better (rates: parley/best other; time, latency, memory: best other/parley).")
if partial:
    print("* some operations of that phase failed (see 'failed' in the JSON lines).")
PY
}

# ---------------------------------------------------------------- main

if [ -n "$REPORT" ]; then
	[ -f "$RESULTS" ] || { echo "compare.sh: no results file $RESULTS" >&2; exit 1; }
	python3 - "$RESULTS" "$REPORT" >"$THIS_RUN" <<'PY'
import json, sys
lines = []
for line in open(sys.argv[1]):
    try:
        lines.append(json.loads(line))
    except ValueError:
        pass
run = sys.argv[2]
if run == "last":
    run = next((o["bench_run"] for o in reversed(lines) if "bench_run" in o), None)
for o in lines:
    if o.get("bench_run") == run:
        print(json.dumps(o))
PY
	[ -s "$THIS_RUN" ] || { echo "compare.sh: run $REPORT not found in $RESULTS" >&2; exit 1; }
	SERVERS=$(python3 -c 'import json,sys; s=[json.loads(l)["bench_server"] for l in open(sys.argv[1])]; print(" ".join(x for x in ["parley","prosody","ejabberd"] if x in s))' "$THIS_RUN")
	TLS_MODES=$(python3 -c 'import json,sys; s=[json.loads(l)["bench_tls"] for l in open(sys.argv[1])]; print(" ".join(x for x in ["none","starttls","direct"] if x in s))' "$THIS_RUN")
	echo "run $(head -n 1 "$THIS_RUN" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["bench_run"])') from $RESULTS"
	print_table
	exit 0
fi

ensure_tools
if [ "$CHECK_ONLY" = 0 ] && ! build_tool; then
	log "cannot run the phases without the load tool; use --check to only start and probe the servers"
	exit 1
fi
log "run $RUN_ID: servers [$SERVERS], tls [$TLS_MODES], phases [$PHASES], users $USERS; results -> $RESULTS"
for server in $SERVERS; do
	for tls in $TLS_MODES; do
		bench_server "$server" "$tls"
		[ "$CHECK_ONLY" = 1 ] && break  # TLS mode does not matter for a start-up check
	done
done
if [ "$CHECK_ONLY" = 1 ]; then
	TLS_MODES=$(echo $TLS_MODES | awk '{ print $1 }')
fi
print_table
log "JSON lines appended to $RESULTS"
