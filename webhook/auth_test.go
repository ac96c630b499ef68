package webhook_test

// Who may call: signatures by any of the configured keys, unsigned calls
// only from loopback, and the handler's configuration.

import (
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/internal/testdb"
	"flashsale/signing"
	"flashsale/stock"
	"flashsale/webhook"
)

// TestUnsigned: with no secret, calls without signature headers are accepted.
func TestUnsigned(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			e := newEnv(t, d, webhook.Options{})
			f := e.newOrder(t)
			before := e.state(t, f)
			rep := e.do(t, newRequest(t, http.MethodPost, "application/json", eventJSON(f.key, f.orderID, "success"), unsigned))
			if rep.status != 200 || rep.ok != (okBody{OrderID: f.orderID.String(), OrderStatus: "PAID", Outcome: "APPLIED"}) {
				t.Fatalf("got %d %+v %q, want 200 PAID", rep.status, rep.ok, rep.errorText)
			}
			if after := e.state(t, f); after.available != before.available-3 || after.reserved != before.reserved-3 || after.events != 1 {
				t.Errorf("state %+v after %+v", after, before)
			}
			e.audit(t)
			e.checkLog(t, 200)
		})
	}
}

// TestUnsignedFromAnotherMachine: without WEBHOOK_SECRET, an unsigned call
// from any address but loopback is 401 and changes nothing, whatever
// X-Forwarded-For claims; IPv4 and IPv6 loopback are taken.
func TestUnsignedFromAnotherMachine(t *testing.T) {
	e := newEnv(t, dialect.SQLite, webhook.Options{})
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"192.0.2.10:5000", 401},
		{"[2001:db8::1]:5000", 401},
		{"[::1]:5000", 200},
		{"127.0.0.1:5000", 200},
	} {
		t.Run(tc.remote, func(t *testing.T) {
			f := e.newOrder(t)
			before := e.state(t, f)
			r := newRequest(t, http.MethodPost, "application/json", eventJSON(f.key, f.orderID, "success"), unsigned)
			r.RemoteAddr = tc.remote
			r.Header.Set("X-Forwarded-For", "127.0.0.1")
			rep := e.do(t, r)
			if rep.status != tc.want {
				t.Fatalf("got %d %q, want %d", rep.status, rep.errorText, tc.want)
			}
			if tc.want == 401 {
				if !strings.Contains(rep.errorText, "WEBHOOK_SECRET") {
					t.Errorf("error %q does not say what to set", rep.errorText)
				}
				if after := e.state(t, f); after != before {
					t.Errorf("state %+v after a refused call, was %+v", after, before)
				}
			}
		})
	}
}

// TestKeyRotation: with two secrets configured (the provider's old and
// new key), a call signed by either is taken and one signed by a third is
// 401; dropping the old secret then refuses what it signs.
func TestKeyRotation(t *testing.T) {
	const (
		oldSecret = "whsec_b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQtb2xkLW9sZA=="
		newSecret = "whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXctbmV3LW5ldw=="
		stranger  = "whsec_c3RyYW5nZXItc3RyYW5nZXItc3RyYW5nZXItc3Q="
	)
	both, err := signing.ParseSecrets(oldSecret + "  " + newSecret)
	if err != nil {
		t.Fatal(err)
	}
	onlyNew, err := signing.ParseSecrets(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.Open(t, dialect.SQLite, database.Options{MaxConns: 4})
	during, after := newEnvOn(t, db, webhook.Options{Keys: both}), newEnvOn(t, db, webhook.Options{Keys: onlyNew})
	for _, tc := range []struct {
		name   string
		e      *env
		secret string
		want   int
	}{
		{"old key while rotating", during, oldSecret, 200},
		{"new key while rotating", during, newSecret, 200},
		{"unknown key", during, stranger, 401},
		{"old key after rotation", after, oldSecret, 401},
		{"new key after rotation", after, newSecret, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.e.newOrder(t)
			rep := tc.e.do(t, newRequest(t, http.MethodPost, "application/json", eventJSON(f.key, f.orderID, "success"), signAt(tc.secret, 0)))
			if rep.status != tc.want {
				t.Fatalf("got %d %q, want %d", rep.status, rep.errorText, tc.want)
			}
		})
	}
}

// TestParseSecret: a malformed or short secret is refused without being
// echoed, with a hint on how to make a good one.
func TestParseSecret(t *testing.T) {
	cases := []struct {
		name, secret string
		ok           bool
	}{
		{"valid", testSecret, true},
		{"valid with newline", testSecret + "\n", true},
		{"unset", "", false},
		{"no prefix", secretKey, false},
		{"prefix only", "whsec_", false},
		{"not base64", "whsec_" + secretKey[:10] + "!!" + secretKey[12:], false},
		{"key of 8 bytes", "whsec_" + base64.StdEncoding.EncodeToString([]byte("8 bytes!")), false},
		{"key of 23 bytes", "whsec_" + base64.StdEncoding.EncodeToString([]byte("twenty-three bytes long")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := signing.ParseSecret(tc.secret)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				if len(key) < signing.MinKeyLen {
					t.Fatalf("key of %d bytes accepted", len(key))
				}
				return
			}
			if strings.Contains(err.Error(), secretKey[:8]) {
				t.Errorf("error echoes the secret: %v", err)
			}
			if !strings.Contains(err.Error(), "openssl rand") {
				t.Errorf("error does not say how to make a secret: %v", err)
			}
		})
	}
}

// TestNew: New refuses a short key and a nil service; no key means unsigned.
func TestNew(t *testing.T) {
	svc := stock.New(nil, "sqlite3", stockConfig, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name string
		keys [][]byte
		ok   bool
	}{
		{"no key", nil, true},
		{"24 bytes", [][]byte{testKey}, true},
		{"two keys", [][]byte{testKey, testKey[:24]}, true},
		{"23 bytes", [][]byte{testKey[:23]}, false},
		{"empty", [][]byte{{}}, false},
		{"second too short", [][]byte{testKey, testKey[:23]}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := webhook.New(svc, webhook.Options{Keys: tc.keys}); (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := webhook.New(nil, webhook.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}
