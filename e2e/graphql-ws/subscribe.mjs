// A storefront's subscription, as the README shows it: the graphql-ws
// client subscribes to productStock and prints each event as one JSON line
// on stdout ({"event": ...} or {"error": ...} or {"complete": true} or
// {"closed": code}), for the Go test that runs it.
//
//   node subscribe.mjs ws://127.0.0.1:8080/graphql 1 [origin] [token]
//
// With a token, it goes in connection_init as a browser storefront sends
// it (connectionParams: {Authorization: "Bearer <token>"}). Each line of
// stdin ({"query": ..., "variables": ...}) is run over the same connection,
// its answers printed as {"result": ...} (or {"resultError": ...}) and
// {"resultComplete": true}.
import { createInterface } from 'node:readline';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, productId, origin, token] = process.argv.slice(2);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const errorOf = (err) => (Array.isArray(err) ? err : String(err?.message ?? err));

class OriginWebSocket extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, origin ? { headers: { Origin: origin } } : {});
  }
}

const client = createClient({
  url,
  webSocketImpl: OriginWebSocket,
  connectionParams: token ? { Authorization: `Bearer ${token}` } : undefined,
  retryAttempts: 0,
  lazy: true,
  on: {
    closed: (e) => {
      out({ closed: e.code, reason: e.reason });
      process.exit(0);
    },
  },
});

client.subscribe(
  {
    query: 'subscription ($id: ID!) { productStock(id: $id) { id stockAvailable stockReserved stockSellable updatedAt } }',
    variables: { id: productId },
  },
  {
    next: (data) => out({ event: data }),
    error: (err) => out({ error: errorOf(err) }),
    complete: () => out({ complete: true }),
  },
);

createInterface({ input: process.stdin }).on('line', (line) => {
  client.subscribe(JSON.parse(line), {
    next: (data) => out({ result: data }),
    error: (err) => out({ resultError: errorOf(err) }),
    complete: () => out({ resultComplete: true }),
  });
});
