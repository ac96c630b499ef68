#!/usr/bin/env bash
# What order events cost a sale (docs/performance.md, "Order events"): builds
# the server, creates two fresh MariaDB databases, starts server A (no
# sink) on one and server B on the other with its webhook sink pointed at
# the load tool's receiver, then runs lifecycle (A) and lifecycle-events (B)
# taking turns in one run, prints the report, and on exit stops both
# servers and drops both databases.
#
#   bash loadtest/events.sh                       # -clients 256 -duration 10s
#   bash loadtest/events.sh -duration 20s -json /tmp/events.json
#
# Arguments are the load tool's flags; they come after the defaults, so
# they win. The tool's exit code is the script's.
#
# Environment: MYSQL_HOST (127.0.0.1), MYSQL_PORT (3306), MYSQL_USER (root,
# no password), PORT_A (18080), PORT_B (18081), EVENTS_LISTEN
# (127.0.0.1:18090, the receiver), KEEP_LOGS=1 keeps the servers' logs.
# Server B may be given extra settings through EVENTS_B_ENV, e.g.
# EVENTS_B_ENV="EVENTS_CONCURRENCY=32 METRICS_ADDR=127.0.0.1:19090".
#
# ANALYZE_AT=3 is an experiment, not the server as shipped: 3 s into the
# run it runs ANALYZE TABLE event_deliveries on B's database, which makes
# MariaDB re-plan the relay's claim with the table's current statistics
# (see docs/performance.md, "Order events": the plan it keeps from the
# empty table reads every PENDING delivery per candidate).
set -euo pipefail
cd "$(dirname "$0")/.."

host=${MYSQL_HOST:-127.0.0.1}
dbport=${MYSQL_PORT:-3306}
user=${MYSQL_USER:-root}
port_a=${PORT_A:-18080}
port_b=${PORT_B:-18081}
listen=${EVENTS_LISTEN:-127.0.0.1:18090}

work=$(mktemp -d /tmp/flashsale-events.XXXXXX)
run=$(openssl rand -hex 4)
db_a=lt_events_a_$run
db_b=lt_events_b_$run
sql() { mysql --protocol=tcp -h"$host" -P"$dbport" -u"$user" -e "$1"; }

pids=()
cleanup() {
	local code=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	sql "DROP DATABASE IF EXISTS $db_a; DROP DATABASE IF EXISTS $db_b" || true
	if [ "${KEEP_LOGS:-}" = 1 ]; then
		echo "server logs kept in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The tool is built before the servers start too, so that neither its
# compilation nor go run's overlaps the measured run.
echo "events.sh: building the server and the load tool" >&2
go build -o "$work/flashsale" .
go build -o "$work/loadtest" ./loadtest
sql "CREATE DATABASE $db_a; CREATE DATABASE $db_b"

# The same operator token and payment webhook secret on both servers, so
# one -token and -secret drive both; the events secret is B's alone.
admin_token=$(openssl rand -hex 24)
webhook_secret="whsec_$(openssl rand -base64 32)"
events_secret="whsec_$(openssl rand -base64 32)"
common=(ADMIN_TOKEN="$admin_token" WEBHOOK_SECRET="$webhook_secret" LOG_LEVEL=warn)

start() { # start NAME PORT DB [VAR=VALUE...]
	local name=$1 port=$2 db=$3
	shift 3
	env "${common[@]}" PORT="$port" DATABASE_URL="mysql://$user@$host:$dbport/$db" "$@" \
		"$work/flashsale" >"$work/$name.log" 2>&1 &
	pids+=($!)
}
start a "$port_a" "$db_a"
# shellcheck disable=SC2086 # EVENTS_B_ENV is a list of VAR=VALUE words
start b "$port_b" "$db_b" EVENTS_WEBHOOK_URL="http://$listen/events" EVENTS_WEBHOOK_SECRET="$events_secret" ${EVENTS_B_ENV:-}

for port in "$port_a" "$port_b"; do
	for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
	curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || {
		echo "events.sh: the server on :$port did not start; its log:" >&2
		cat "$work"/*.log >&2
		exit 1
	}
done
echo "events.sh: server A (no sink) on :$port_a, database $db_a; server B (webhook sink to $listen) on :$port_b, database $db_b" >&2

if [ -n "${ANALYZE_AT:-}" ]; then
	(sleep "$ANALYZE_AT" && sql "ANALYZE TABLE $db_b.event_deliveries" >/dev/null &&
		echo "events.sh: ANALYZE TABLE $db_b.event_deliveries at +${ANALYZE_AT}s (experiment)" >&2) &
	pids+=($!)
fi
set +e
"$work/loadtest" -url "http://127.0.0.1:$port_a" -events-url "http://127.0.0.1:$port_b" \
	-events-listen "$listen" -events-secret "$events_secret" \
	-token "$admin_token" -secret "$webhook_secret" -db "mysql://$user@$host:$dbport/$db_a" \
	-scenarios lifecycle,lifecycle-events -clients 256 -duration 10s "$@"
code=$?
set -e
# What each server process spent, setup and drain included (Linux /proc):
# divided by its complete lifecycles, the cost of the events per lifecycle
# without the turns' overlap (B's relay also drains during A's slices).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || echo "?"; }
echo "events.sh: CPU seconds used: server A $(cpu "${pids[0]}"), server B $(cpu "${pids[1]}")"
if grep -qv '^$' "$work/a.log" "$work/b.log" 2>/dev/null; then
	echo "events.sh: the servers logged (warn and above):" >&2
	tail -n 20 "$work/a.log" "$work/b.log" >&2
fi
exit "$code"
