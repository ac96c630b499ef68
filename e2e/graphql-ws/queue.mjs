// A storefront in a waiting room, as docs/api.md ("Waiting room") shows it:
// the graphql-ws client joins the queue over the socket, follows its ticket
// with the queueTicket subscription, and once ADMITTED takes its one hold
// with createHold(…, queueTicketId) over the same socket. For the Go test
// that runs it (queue_ws_test.go), each step is one JSON line on stdout:
//
//   {"joined": ticket}                     joinQueue's answer
//   {"ticket": ticket, "receivedAt": ms}   each queueTicket event (ms: Unix epoch, fractional)
//   {"hold": hold}                         createHold's answer
//   {"closed": code, "reason": ...}        a socket closed (graphql-ws reconnects as it likes)
//   {"error": ...}                         something failed: the script exits 1
//
// It exits 0 once its ticket is USED, 1 on an error, 2 when the ticket ends
// otherwise (SOLD_OUT, EXPIRED), 3 when nothing ends it in QUEUE_TIMEOUT_MS
// (default 60000).
//
//   CUSTOMER_TOKEN=<jwt> node queue.mjs ws://127.0.0.1:8080/graphql <productId> [token]
//
// The customer token goes in connection_init (connectionParams), as a
// browser storefront sends it; the argument wins over the environment.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, productId, tokenArg] = process.argv.slice(2);
const token = tokenArg || process.env.CUSTOMER_TOKEN;
if (!url || !productId || !token) {
  process.stderr.write('usage: CUSTOMER_TOKEN=<jwt> node queue.mjs <ws url> <product id> [token]\n');
  process.exit(64);
}
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const now = () => performance.timeOrigin + performance.now();
const fail = (what, err) => {
  out({ error: what, detail: Array.isArray(err) ? err : String(err?.message ?? err?.reason ?? err) });
  process.exit(1);
};
setTimeout(() => {
  out({ error: 'timeout', detail: 'the ticket was not USED in time' });
  process.exit(3);
}, Number(process.env.QUEUE_TIMEOUT_MS || 60000)).unref();

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  // Called on every (re)connect, so a fresh token would go each time.
  connectionParams: async () => ({ Authorization: `Bearer ${token}` }),
  on: { closed: (e) => out({ closed: e?.code, reason: e?.reason }) },
});
// One query or mutation over the socket: its last result, or the error
// (a refusal, or GraphQL errors in the result, which the snippet's callers
// would find as data === null).
const ask = (query, variables) => new Promise((resolve, reject) => {
  let result;
  client.subscribe({ query, variables }, {
    next: (r) => (result = r),
    error: reject,
    complete: () => (result?.errors?.length ? reject(result.errors) : resolve(result)),
  });
});

let ticketId;
try {
  const { data } = await ask('mutation ($p: ID!) { joinQueue(productId: $p) { id status position createdAt } }', { p: productId });
  ticketId = data.joinQueue.id;
  out({ joined: data.joinQueue });
} catch (err) {
  fail('joinQueue', err);
}

let hold = null; // the createHold under way: one pass, one hold, however often ADMITTED comes
let done = false;
client.subscribe(
  {
    query: `subscription ($id: ID!) { queueTicket(id: $id) {
      id status position estimatedAdmissionAt admittedAt passExpiresAt } }`,
    variables: { id: ticketId },
  },
  {
    next: async (result) => {
      const receivedAt = now();
      if (result.errors?.length) fail('queueTicket', result.errors);
      const t = result.data.queueTicket;
      out({ ticket: t, receivedAt });
      if (t.status === 'ADMITTED' && !hold) {
        hold = ask(`mutation ($p: ID!, $t: ID!) {
          createHold(productId: $p, qty: 1, queueTicketId: $t) { id status qty expiresAt } }`, { p: productId, t: ticketId })
          .then(({ data }) => out({ hold: data.createHold }))
          .catch((err) => fail('createHold', err)); // INSUFFICIENT_STOCK, …: a storefront would let the buyer retry
      }
      if (t.status === 'USED' && !done) {
        done = true;
        await hold; // the hold's answer may come after the ticket's change
        await client.dispose();
        process.exit(0);
      }
      if (t.status === 'SOLD_OUT' || t.status === 'EXPIRED') {
        out({ error: 'ticket', detail: t.status });
        process.exit(2);
      }
    },
    error: (err) => fail('queueTicket', err), // NOT_FOUND: not this customer's ticket
    complete: () => done || fail('queueTicket', 'the subscription completed before the ticket was USED'),
  },
);
