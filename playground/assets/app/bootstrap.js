// Starts GraphiQL on the operator's playground page (package playground).
//
// A file of its own, not an inline script, so the page's
// Content-Security-Policy allows scripts from its own origin only. It runs
// after react, react-dom and graphiql (all `defer`, in document order), reads
// the GraphQL endpoint from the #graphiql element's data-endpoint attribute
// (a path on this origin) and talks to it over HTTP, and over WebSocket
// (graphql-transport-ws, the graphql-ws client inside graphiql.min.js) for
// subscriptions. It names no host: every URL is built from the page's own.
//
// GraphiQL's dialogs add one <style> element (react-remove-scroll's scroll
// lock), which the CSP admits by the page's nonce only: that library reads
// the nonce from the global __webpack_nonce__, so this script passes on its
// own nonce attribute (the page gives it one for this reason alone).
(function () {
  "use strict";

  var self = document.currentScript;
  if (self && self.nonce) {
    window.__webpack_nonce__ = self.nonce;
  }

  var root = document.getElementById("graphiql");
  if (!window.React || !window.ReactDOM || !window.GraphiQL) {
    root.textContent =
      "GraphiQL's scripts did not load: see the browser console. " +
      "The GraphQL endpoint itself is at " + root.getAttribute("data-endpoint") + ".";
    return;
  }

  var url = new URL(root.getAttribute("data-endpoint"), window.location.href);
  if (url.origin !== window.location.origin) {
    root.textContent = "The playground only talks to its own origin.";
    return;
  }
  var subscriptionUrl = new URL(url.href);
  subscriptionUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";

  var fetcher = GraphiQL.createFetcher({
    url: url.href,
    subscriptionUrl: subscriptionUrl.href,
  });

  var defaultQuery = [
    "# The flash-sale API. Ctrl-Enter runs the query; the docs (book icon) list every field.",
    "# Operator mutations (createProduct) need the header",
    '#   {"Authorization": "Bearer <ADMIN_TOKEN>"}',
    "# in the Headers tab below. Headers are not saved in this browser.",
    "query Products {",
    "  products(first: 20) {",
    "    edges { node { id name priceCents stockSellable saleStartsAt saleEndsAt } }",
    "    pageInfo { hasNextPage endCursor }",
    "  }",
    "}",
    "",
  ].join("\n");

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      shouldPersistHeaders: false,
    })
  );
})();
