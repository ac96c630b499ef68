package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"flashsale/signing"
)

// localNonLoopback is an address of this machine that is not loopback, so
// that a connection to it comes from "another machine" as far as the
// server can tell; "" when the machine has none.
func localNonLoopback(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// postPayment posts a payment event for orderID to host:port, signed by
// secret when it is set, and returns the status.
func postPayment(t *testing.T, host string, port int, secret, key, orderID string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"idempotency_key": key, "order_id": orderID, "status": "success"})
	req, _ := http.NewRequest(http.MethodPost, "http://"+net.JoinHostPort(host, strconv.Itoa(port))+"/api/payments/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		sg, err := signing.NewSigner(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := sg.Sign(req.Header, "msg_"+key, time.Now(), body); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUnsignedWebhookOnlyFromLoopback: the embedded default, which takes
// unsigned payment webhooks and listens on every interface, takes them
// only from this machine; from another address they are 401 and the order
// stays unpaid. (Before: anyone on the network could mark orders paid.)
func TestUnsignedWebhookOnlyFromLoopback(t *testing.T) {
	remote := localNonLoopback(t)
	if remote == "" {
		t.Skip("this machine has no non-loopback IPv4 address to call from")
	}
	ts := startServer(t, dialect.SQLite, map[string]string{"WEBHOOK_SECRET": ""})
	port := serverPort(t, ts)
	p := ts.createProduct(t, 5)
	order := ts.createOrder(t, ts.createHold(t, p.ID, 1))
	if got := postPayment(t, remote, port, "", "evt_remote", order); got != http.StatusUnauthorized {
		t.Fatalf("unsigned from %s: %d, want 401", remote, got)
	}
	if got := ts.product(t, p.ID); got.StockAvailable != 5 {
		t.Fatalf("a refused webhook changed stock: %+v", got)
	}
	if got := postPayment(t, "127.0.0.1", port, "", "evt_local", order); got != http.StatusOK {
		t.Fatalf("unsigned from loopback: %d, want 200", got)
	}
	if got := ts.product(t, p.ID); got.StockAvailable != 4 {
		t.Fatalf("after the loopback payment: %+v", got)
	}
}

// TestWebhookSecretRotation: with WEBHOOK_SECRET listing the old and the
// new secret, the provider's calls signed by either are taken; others 401.
func TestWebhookSecretRotation(t *testing.T) {
	const newSecret = "whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXctbmV3LW5ldw=="
	const stranger = "whsec_c3RyYW5nZXItc3RyYW5nZXItc3RyYW5nZXItc3Q="
	ts := startServer(t, dialect.MySQL, map[string]string{"WEBHOOK_SECRET": testSecret + " " + newSecret})
	port := serverPort(t, ts)
	p := ts.createProduct(t, 5)
	for i, tc := range []struct {
		secret string
		want   int
	}{{testSecret, 200}, {newSecret, 200}, {stranger, 401}, {"", 401}} {
		order := ts.createOrder(t, ts.createHold(t, p.ID, 1))
		if got := postPayment(t, "127.0.0.1", port, tc.secret, "evt_rot_"+strconv.Itoa(i), order); got != tc.want {
			t.Errorf("signed by secret %d: %d, want %d", i, got, tc.want)
		}
	}
	if got := ts.product(t, p.ID); got.StockAvailable != 3 {
		t.Fatalf("available %d after two accepted payments, want 3", got.StockAvailable)
	}
}

func serverPort(t *testing.T, ts *testServer) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}
