package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://127.1.2.3:8080/", true},
		{"http://localhost:8080", true},
		{"http://LOCALHOST", true},
		{"http://[::1]:8080", true},
		{"https://127.0.0.1", true},
		{"http://10.0.0.1:8080", false},
		{"http://192.168.1.10", false},
		{"http://[::2]:8080", false},
		{"http://example.com", false},
		{"http://localhost.example.com", false},
		{"http://127.0.0.1.nip.io", false},
		{"ftp://127.0.0.1", false},
		{"127.0.0.1:8080", false},
		{"http://127.0.0.1:8080/graphql", false},
	} {
		_, err := loopbackURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("loopbackURL(%q): err %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		db string
		ok bool
	}{
		{"mysql://root@127.0.0.1:3306/flashsale", true},
		{"mysql://root@localhost/flashsale", true},
		{"sqlite://flashsale.db", true},
		{"mysql://root@db.internal:3306/flashsale", false},
		{"mysql://root@127.0.0.1:3306/", false},
		{"postgres://127.0.0.1/x", false},
	} {
		if err := checkDBURL(tc.db); (err == nil) != tc.ok {
			t.Errorf("checkDBURL(%q): err %v, want ok=%v", tc.db, err, tc.ok)
		}
	}
	// The dialer refuses a non-loopback address whatever the name said.
	if err := dialLoopbackOnly("tcp", "10.1.2.3:80", nil); err == nil {
		t.Errorf("dialLoopbackOnly let 10.1.2.3 through")
	}
	if err := dialLoopbackOnly("tcp", "127.0.0.1:80", nil); err != nil {
		t.Errorf("dialLoopbackOnly refused 127.0.0.1: %v", err)
	}
	// And the tool stops at its flags.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"loadtest", "-url", "http://10.0.0.1:8080", "-token", "x"}, noEnv, &out, &errb); code != exitUsage {
		t.Fatalf("non-loopback -url: exit %d, want %d (%s)", code, exitUsage, errb.String())
	}
	if !strings.Contains(errb.String(), "not loopback") {
		t.Fatalf("message does not say why: %s", errb.String())
	}
}

func TestRefusalCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code string // "": not read the cheap way
	}{
		// What gqlgen writes for a refused createHold.
		{`{"errors":[{"message":"insufficient stock: 1 requested, product is sold out","path":["createHold"],"locations":[{"line":1,"column":20}],"extensions":{"code":"INSUFFICIENT_STOCK"}}],"data":null}`, "INSUFFICIENT_STOCK"},
		{`{"errors":[{"message":"m","path":["createHold"],"extensions":{"code":"NOT_FOUND"}}],"data":null}`, "NOT_FOUND"},
		{`{"errors":[{"message":"say \"no\" \\","path":["a",0,"b"],"extensions":{"code":"SALE_NOT_STARTED","saleStartsAt":"2026-12-01T00:00:00Z"}}],"data":null}`, "SALE_NOT_STARTED"},
		{`{"errors":[{"message":"unauthenticated","extensions":{"code":"UNAUTHENTICATED"}}]}`, "UNAUTHENTICATED"},
		{`{"data":{"createHold":{"id":"x"}}}`, ""},
		{`{"errors":[{"message":"x","locations":[{"line":1,"column":2}],"extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}}]}`, "GRAPHQL_VALIDATION_FAILED"},
		{`{"errors":[{"message":"x","locations":[{"line":1,"column":2}],"path":["a"],"extensions":{"code":"X"}}]}`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{"code":"bad"}}]}`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{"code":"INSUFF`, ""},
		{`{"errors":[{"message":"unterminated`, ""},
		{`{"errors":[{"message":"x","path":["a"],"extensions":{}}]}`, ""},
	} {
		code, ok := refusalCode([]byte(tc.in))
		if ok != (tc.code != "") || code != tc.code {
			t.Errorf("refusalCode(%s) = %q, %v; want %q", tc.in, code, ok, tc.code)
		}
		if !ok {
			continue
		}
		// The cheap read must agree with the full decode.
		var out gqlResponse
		if err := json.Unmarshal([]byte(tc.in), &out); err != nil || len(out.Errors) == 0 || out.Errors[0].Extensions.Code != code {
			t.Errorf("refusalCode(%s) = %q; the full decode says %+v (%v)", tc.in, code, out.Errors, err)
		}
	}
}

// TestPostAnswers: how post classifies what a server answers, and that it
// decodes data in the same pass.
func TestPostAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		class  string
		id     string
	}{
		{"data", 200, `{"data":{"createHold":{"id":"h1"}}}`, "", "h1"},
		{"refusal", 200, `{"errors":[{"message":"no","path":["createHold"],"extensions":{"code":"INSUFFICIENT_STOCK"}}],"data":null}`, "INSUFFICIENT_STOCK", ""},
		{"error first in another order", 200, `{"data":null,"errors":[{"extensions":{"code":"NOT_FOUND"},"message":"no"}]}`, "NOT_FOUND", ""},
		{"error without code", 200, `{"errors":[{"message":"no"}],"data":null}`, "error without code", ""},
		{"rate limited", 429, `{"errors":[{"message":"slow down","extensions":{"code":"RATE_LIMITED","retryAfter":1}}]}`, "RATE_LIMITED", ""},
		{"error beside data of another shape", 200, `{"errors":[{"message":"x","extensions":{"code":"X"}}],"data":{"createHold":7}}`, "X", ""},
		{"data of another shape", 200, `{"data":{"createHold":7}}`, "bad JSON answer", ""},
		{"not JSON", 200, `<html>`, "bad JSON answer", ""},
		{"HTTP error, not JSON", 502, `bad gateway`, "HTTP 502", ""},
		{"HTTP error with data", 500, `{"data":{"createHold":{"id":"h1"}}}`, "HTTP 500", "h1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a, err := newAPI(srv.URL, "", "", 1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer a.close()
			var out struct {
				CreateHold struct{ ID string } `json:"createHold"`
			}
			class := a.post(context.Background(), "", []byte(`{}`), &out)
			if class != tc.class || out.CreateHold.ID != tc.id {
				t.Errorf("post = %q, id %q; want %q, id %q", class, out.CreateHold.ID, tc.class, tc.id)
			}
			want := tc.class
			if tc.name == "data of another shape" {
				want = "" // without a place for data, its shape is not checked
			}
			if class := a.post(context.Background(), "", []byte(`{}`), nil); class != want {
				t.Errorf("post without data = %q; want %q", class, want)
			}
		})
	}
}
