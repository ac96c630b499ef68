#!/usr/bin/env bash
# Black-box smoke test: builds the server, runs it on a fresh MariaDB
# database and drives the contract with curl and jq only (no project code on
# the client side). Usage: .ci/smoke.sh  (MariaDB at 127.0.0.1:3306, root).
set -euo pipefail
cd "$(dirname "$0")/.."

db=flashsale_smoke_$$
port=$((20000 + RANDOM % 20000))
secret_b64=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
token=$(openssl rand -base64 32)
base=http://127.0.0.1:$port
work=$(mktemp -d)
mysql --protocol=tcp -h127.0.0.1 -uroot -e "CREATE DATABASE $db"
cleanup() {
	[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	mysql --protocol=tcp -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db" || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/flashsale" .
passed=0
ok() { passed=$((passed + 1)); echo "ok  $1"; }

# Fail closed: on MySQL, no webhook secret or a short operator token stops the server.
for bad in "WEBHOOK_SECRET=" "ADMIN_TOKEN=short"; do
	name=${bad%%=*}
	if env PORT=$port DATABASE_URL="mysql://root@127.0.0.1:3306/$db" ADMIN_TOKEN="$token" \
		WEBHOOK_SECRET=whsec_$secret_b64 "$bad" "$work/flashsale" >"$work/refused" 2>&1; then
		cat "$work/refused"; echo "FAIL: server started with $bad"; echo "smoke: $passed passed, 1 failed"; exit 1
	fi
	grep -q "$name" "$work/refused" || { cat "$work/refused"; echo "FAIL: refusal does not name $name"; exit 1; }
	ok "refuses to start with $bad"
done

PORT=$port DATABASE_URL="mysql://root@127.0.0.1:3306/$db" ADMIN_TOKEN=$token \
	WEBHOOK_SECRET=whsec_$secret_b64 "$work/flashsale" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$base/readyz" >/dev/null || { cat "$work/log"; echo "server did not become ready"; exit 1; }

fail() { echo "FAIL: $*"; tail -20 "$work/log"; echo "smoke: $passed passed, 1 failed"; exit 1; }
gql() { # gql QUERY [VARIABLES_JSON] [extra curl args...]
	local q=$1 v=${2:-'{}'}; shift 2 || shift $#
	curl -s "$base/graphql" -H 'Content-Type: application/json' "$@" \
		-d "$(jq -nc --arg q "$q" --argjson v "$v" '{query: $q, variables: $v}')"
}
expect() { # expect NAME JSON JQ_FILTER
	if [ "$(jq -r "$3" <<<"$2")" != "true" ]; then fail "$1: $2"; fi
	ok "$1"
}
webhook() { # webhook BODY [SIGNATURE]
	local id=msg_$RANDOM ts sig
	ts=$(date +%s)
	sig=${2:-v1,$(printf '%s' "$id.$ts.$1" | openssl dgst -sha256 -mac HMAC \
		-macopt hexkey:"$(printf '%s' "$secret_b64" | base64 -d | xxd -p -c 256)" -binary | base64)}
	curl -s -w '\n%{http_code}' "$base/api/payments/webhook" -H 'Content-Type: application/json' \
		-H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: $sig" -d "$1"
}

r=$(gql 'mutation { createProduct(input: {name: "Smoke", priceCents: 500, stock: 3}) { id stockSellable } }' '{}' -H "Authorization: Bearer $token")
expect "createProduct" "$r" '.data.createProduct.stockSellable == 3'
pid_=$(jq -r .data.createProduct.id <<<"$r")
r=$(gql 'mutation { createProduct(input: {name: "x", priceCents: 1, stock: 1}) { id } }')
expect "createProduct without token is UNAUTHENTICATED" "$r" '.errors[0].extensions.code == "UNAUTHENTICATED"'

hold='mutation($p: ID!, $q: Int!) { createHold(productId: $p, qty: $q) { id status product { stockReserved stockSellable } } }'
r=$(gql "$hold" "{\"p\":\"$pid_\",\"q\":2}")
expect "createHold" "$r" '.data.createHold.status == "ACTIVE" and .data.createHold.product.stockSellable == 1'
hold_id=$(jq -r .data.createHold.id <<<"$r")
r=$(gql "$hold" "{\"p\":\"$pid_\",\"q\":2}")
expect "createHold beyond stock is INSUFFICIENT_STOCK" "$r" '.errors[0].extensions.code == "INSUFFICIENT_STOCK"'
r=$(gql "$hold" "{\"p\":\"$pid_\",\"q\":0}")
expect "qty 0 is BAD_USER_INPUT" "$r" '.errors[0].extensions.code == "BAD_USER_INPUT"'
r=$(gql "$hold" '{"p":"424242","q":1}')
expect "unknown product is NOT_FOUND" "$r" '.errors[0].extensions.code == "NOT_FOUND"'

order='mutation($h: ID!) { createOrder(holdId: $h) { id status amountCents } }'
r=$(gql "$order" "{\"h\":\"$hold_id\"}")
expect "createOrder" "$r" '.data.createOrder.status == "PENDING_PAYMENT" and .data.createOrder.amountCents == 1000'
order_id=$(jq -r .data.createOrder.id <<<"$r")
r=$(gql "$order" "{\"h\":\"$hold_id\"}")
expect "second createOrder is HOLD_NOT_ACTIVE" "$r" '.errors[0].extensions.code == "HOLD_NOT_ACTIVE"'

body="{\"idempotency_key\":\"evt_smoke\",\"order_id\":\"$order_id\",\"status\":\"success\"}"
r=$(webhook "$body")
expect "webhook success" "$(head -1 <<<"$r")" '.order_status == "PAID" and .duplicate == false'
[ "$(tail -1 <<<"$r")" = 200 ] || fail "webhook status $r"
r=$(webhook "$body")
expect "webhook duplicate" "$(head -1 <<<"$r")" '.duplicate == true'
r=$(webhook "${body/success/failure}")
[ "$(tail -1 <<<"$r")" = 409 ] || fail "reused key: $r"; ok "reused key is 409"
r=$(webhook "$body" "v1,AAAA")
[ "$(tail -1 <<<"$r")" = 401 ] || fail "bad signature: $r"; ok "bad signature is 401"
r=$(webhook '{"idempotency_key":"k","order_id":"x","status":"maybe"}')
[ "$(tail -1 <<<"$r")" = 400 ] || fail "bad status: $r"; ok "bad status is 400"

r=$(curl -s "$base/graphql?query=$(jq -rn --arg q "{ product(id: \"$pid_\") { stockAvailable stockReserved stockSellable } }" '$q|@uri')")
expect "stock after payment" "$r" '.data.product == {"stockAvailable":1,"stockReserved":0,"stockSellable":1}'

kill -TERM "$pid"
wait "$pid" || fail "server exited non-zero after SIGTERM"
pid=
grep -q 'msg=stopped' "$work/log" || fail "no graceful stop in the log"
ok "graceful shutdown on SIGTERM"

# Customers: the same database, now with customer tokens required. Tokens are
# made with openssl, as the README shows a shop may do.
customer_secret=$(openssl rand -base64 32)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt() { # jwt SUB [EXP_OFFSET_SECONDS]
	local head body sig
	head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
	body=$(printf '{"sub":"%s","exp":%d}' "$1" $(($(date +%s) + ${2:-900})) | b64url)
	sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -hmac "$customer_secret" -binary | b64url)
	printf '%s.%s.%s' "$head" "$body" "$sig"
}
PORT=$port DATABASE_URL="mysql://root@127.0.0.1:3306/$db" ADMIN_TOKEN=$token \
	WEBHOOK_SECRET=whsec_$secret_b64 CUSTOMER_JWT_SECRET=$customer_secret "$work/flashsale" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
alice=$(jwt alice) bob=$(jwt bob)
r=$(gql 'mutation { createProduct(input: {name: "Limited", priceCents: 900, stock: 50, maxPerCustomer: 2}) { id } }' '{}' -H "Authorization: Bearer $token")
limited=$(jq -r .data.createProduct.id <<<"$r")
hold='mutation($p: ID!, $q: Int!, $k: String) { createHold(productId: $p, qty: $q, idempotencyKey: $k) { id } }'
r=$(gql "$hold" "{\"p\":\"$limited\",\"q\":1}")
expect "createHold without a customer token is UNAUTHENTICATED" "$r" '.errors[0].extensions.code == "UNAUTHENTICATED"'
r=$(gql "$hold" "{\"p\":\"$limited\",\"q\":1,\"k\":\"k1\"}" -H "Authorization: Bearer $alice")
alice_hold=$(jq -r .data.createHold.id <<<"$r")
r=$(gql "$hold" "{\"p\":\"$limited\",\"q\":1,\"k\":\"k1\"}" -H "Authorization: Bearer $alice")
expect "a retry with the same key returns the same hold" "$r" ".data.createHold.id == \"$alice_hold\""
r=$(gql "$hold" "{\"p\":\"$limited\",\"q\":2}" -H "Authorization: Bearer $alice")
expect "past maxPerCustomer is PURCHASE_LIMIT_EXCEEDED" "$r" '.errors[0].extensions.code == "PURCHASE_LIMIT_EXCEEDED"'
r=$(gql 'query($h: ID!) { hold(id: $h) { id } }' "{\"h\":\"$alice_hold\"}" -H "Authorization: Bearer $bob")
expect "another customer's hold reads as null" "$r" '.data.hold == null and (.errors | not)'
code=$(curl -s -o "$work/out" -w '%{http_code}' "$base/graphql" -H 'Content-Type: application/json' \
	-H "Authorization: Bearer $(jwt alice -60)" -d '{"query":"{ me { id } }"}')
[ "$code" = 401 ] && jq -e '.errors[0].extensions.code == "UNAUTHENTICATED"' "$work/out" >/dev/null || fail "expired token: $code $(cat "$work/out")"
ok "an expired customer token is 401 UNAUTHENTICATED"
r=$(gql 'mutation($h: ID!) { releaseHold(holdId: $h) { status product { stockReserved } } }' "{\"h\":\"$alice_hold\"}" -H "Authorization: Bearer $alice")
expect "releaseHold gives the unit back" "$r" '.data.releaseHold.status == "RELEASED" and .data.releaseHold.product.stockReserved == 0'

# One customer from many connections at once (one curl process each): never
# past maxPerCustomer, and one key makes one hold however many race for it.
r=$(gql 'mutation { createProduct(input: {name: "Rush", priceCents: 500, stock: 100, maxPerCustomer: 3}) { id } }' '{}' -H "Authorization: Bearer $token")
rush=$(jq -r .data.createProduct.id <<<"$r")
carol=$(jwt carol) dave=$(jwt dave)
race() { # race N TOKEN VARIABLES_JSON: N concurrent createHold calls, one answer per line
	local n=$1 tok=$2 vars=$3 body
	body=$(jq -nc --arg q "$hold" --argjson v "$vars" '{query: $q, variables: $v}')
	seq "$n" | xargs -P "$n" -I{} curl -s "$base/graphql" -H 'Content-Type: application/json' \
		-H "Authorization: Bearer $tok" -d "$body" -o "$work/race.{}"
	for i in $(seq "$n"); do jq -c . "$work/race.$i"; done
}
r=$(race 40 "$carol" "{\"p\":\"$rush\",\"q\":1}" | jq -s .)
expect "40 concurrent holds of one customer: exactly maxPerCustomer made, the rest PURCHASE_LIMIT_EXCEEDED" "$r" \
	'([.[] | select(.data.createHold.id)] | length) == 3 and ([.[] | select(.errors[0].extensions.code == "PURCHASE_LIMIT_EXCEEDED")] | length) == 37'
r=$(race 30 "$dave" "{\"p\":\"$rush\",\"q\":1,\"k\":\"same-key\"}" | jq -s .)
expect "30 concurrent calls with one key: every one answers with the same single hold" "$r" \
	'([.[] | .data.createHold.id] | unique | length) == 1 and all(.[]; .data.createHold.id != null)'
r=$(gql 'query($p: ID!) { product(id: $p) { stockReserved } me { holds { edges { node { status product { id } } } } } }' "{\"p\":\"$rush\"}" -H "Authorization: Bearer $carol")
expect "the database agrees: 3 units for the customer, 4 reserved in all" "$r" \
	"([.data.me.holds.edges[].node | select(.status == \"ACTIVE\" and .product.id == \"$rush\")] | length) == 3 and .data.product.stockReserved == 4"

# The waiting room: one ticket per customer however many join at once, no
# hold without the pass, admission, and the pass taking one hold.
r=$(gql 'mutation { createProduct(input: {name: "Drop", priceCents: 700, stock: 5, queueAdmitPerMinute: 120}) { id queue { admitPerMinute } } }' '{}' -H "Authorization: Bearer $token")
expect "createProduct with a waiting room" "$r" '.data.createProduct.queue.admitPerMinute == 120'
drop=$(jq -r .data.createProduct.id <<<"$r")
erin=$(jwt erin)
join=$(jq -nc --arg p "$drop" '{query: "mutation($p: ID!) { joinQueue(productId: $p) { id status } }", variables: {p: $p}}')
seq 20 | xargs -P 20 -I{} curl -s "$base/graphql" -H 'Content-Type: application/json' \
	-H "Authorization: Bearer $erin" -d "$join" -o "$work/join.{}"
r=$(for i in $(seq 20); do jq -c . "$work/join.$i"; done | jq -s .)
expect "20 concurrent joins of one customer: one ticket" "$r" '([.[] | .data.joinQueue.id] | unique | length) == 1 and all(.[]; .data.joinQueue.id != null)'
ticket=$(jq -r '.[0].data.joinQueue.id' <<<"$r")
qhold='mutation($p: ID!, $t: ID) { createHold(productId: $p, qty: 1, queueTicketId: $t) { id } }'
r=$(gql "$qhold" "{\"p\":\"$drop\"}" -H "Authorization: Bearer $erin")
expect "a hold without the ticket is QUEUE_REQUIRED" "$r" '.errors[0].extensions.code == "QUEUE_REQUIRED"'
for _ in $(seq 100); do
	r=$(gql 'query($t: ID!) { queueTicket(id: $t) { status passExpiresAt } }' "{\"t\":\"$ticket\"}" -H "Authorization: Bearer $erin")
	jq -e '.data.queueTicket.status == "ADMITTED"' <<<"$r" >/dev/null && break
	sleep 0.1
done
expect "the ticket is let in, with a pass" "$r" '.data.queueTicket.status == "ADMITTED" and .data.queueTicket.passExpiresAt != null'
r=$(gql "$qhold" "{\"p\":\"$drop\",\"t\":\"$ticket\"}" -H "Authorization: Bearer $erin")
expect "the pass takes a hold" "$r" '.data.createHold.id != null'
r=$(gql "$qhold" "{\"p\":\"$drop\",\"t\":\"$ticket\"}" -H "Authorization: Bearer $erin")
expect "and only one: QUEUE_REQUIRED, ticketStatus USED" "$r" '.errors[0].extensions.code == "QUEUE_REQUIRED" and .errors[0].extensions.ticketStatus == "USED"'
kill -TERM "$pid"
wait "$pid" || fail "server exited non-zero after SIGTERM"
pid=

# The README's quickstart and Node live-stock script, exactly as written
# (but for the port), on the embedded default database in a fresh directory.
readme_block() { # readme_block MARKER: the code block between MARKER:begin and MARKER:end
	sed -n "/<!-- $1:begin/,/<!-- $1:end/p" README.md | sed '1d;$d' | sed '/^```/d' |
		sed "s/localhost:8080/127.0.0.1:$port/g"
}
mkdir "$work/demo"
(cd "$work/demo" && PORT=$port exec "$work/flashsale") >"$work/demo.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
readme_block quickstart >"$work/quickstart.sh"
out=$(bash -euo pipefail "$work/quickstart.sh") || fail "the README's quickstart: $out"
expect "the README's quickstart ends with a PAID order and its units sold" "$(tail -1 <<<"$out")" \
	'.data.order.status == "PAID" and .data.order.product.stockAvailable == 48 and .data.order.product.stockReserved == 0'
readme_block node-live >e2e/graphql-ws/readme-live.mjs # beside the graphql-ws and ws packages
(timeout 10 node e2e/graphql-ws/readme-live.mjs >"$work/live.out" 2>&1; rm -f e2e/graphql-ws/readme-live.mjs) &
live=$!
for _ in $(seq 50); do [ -s "$work/live.out" ] && break; sleep 0.1; done
gql 'mutation { createHold(productId: "1", qty: 1) { id } }' >/dev/null
for _ in $(seq 50); do [ "$(wc -l <"$work/live.out")" -ge 2 ] && break; sleep 0.1; done
kill "$live" 2>/dev/null; wait "$live" 2>/dev/null || true
rm -f e2e/graphql-ws/readme-live.mjs
[ "$(head -2 "$work/live.out" | tr '\n' '|')" = "Limited sneaker drop left: 48|Limited sneaker drop left: 47|" ] ||
	fail "the README's Node script printed: $(cat "$work/live.out")"
ok "the README's Node script sees the stock now and after a hold"
kill -TERM "$pid"
wait "$pid" || fail "the demo server exited non-zero after SIGTERM"
pid=
echo "smoke: $passed passed, 0 failed"
