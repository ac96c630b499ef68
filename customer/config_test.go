package customer

// Making a verifier: New (the first JWKS fetch, contexts, the HTTP client,
// invalid config) and Config.Check. Fixtures in customer_test.go.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

func TestNew(t *testing.T) {
	k := keys()
	ctx := context.Background()
	okKey := pubJWK(t, "a", jwkset.AlgRS256, &k.rsa.PublicKey)

	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL + "/jwks"
		srv.Close()
		_, err := New(ctx, Config{JWKSURL: u, Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), "CUSTOMER_JWKS_URL") {
			t.Fatalf("New with the JWKS server down: %v", err)
		}
	})
	bad := []struct {
		name   string
		status int
		body   string
		keys   []jwkset.JWK
	}{
		{name: "HTTP 500", status: http.StatusInternalServerError, keys: []jwkset.JWK{okKey}},
		{name: "not JSON", status: http.StatusOK, body: "<html>"},
		{name: "no keys", status: http.StatusOK, body: `{"keys":[]}`},
		{name: "only a P-384 key", status: http.StatusOK, keys: []jwkset.JWK{pubJWK(t, "p384", "", &k.ec384.PublicKey)}},
		{name: "only an encryption key", status: http.StatusOK, keys: []jwkset.JWK{func() jwkset.JWK {
			j, err := jwkset.NewJWKFromKey(&k.rsa.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "enc", USE: jwkset.UseEnc}})
			if err != nil {
				t.Fatal(err)
			}
			return j
		}()}},
		{name: "larger than a MiB", status: http.StatusOK, body: `{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t, tc.keys...)
			srv.mu.Lock()
			srv.status = tc.status
			if tc.body != "" {
				srv.body = []byte(tc.body)
			}
			srv.mu.Unlock()
			v, err := New(ctx, Config{JWKSURL: srv.url(), Logger: quietLogger()})
			if err == nil {
				v.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), "CUSTOMER_JWKS_URL") {
				t.Fatalf("error does not name the variable: %v", err)
			}
		})
	}
	t.Run("ctx bounds the first fetch", func(t *testing.T) {
		srv := newJWKSServer(t, okKey)
		srv.setDelay(10 * time.Second)
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := New(ctx, Config{JWKSURL: srv.url(), Logger: quietLogger()})
		if err == nil {
			t.Fatal("New succeeded")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("New took %v with a 100ms context", d)
		}
	})
	t.Run("ctx ends, refresh goes on", func(t *testing.T) {
		srv := newJWKSServer(t, okKey)
		ctx, cancel := context.WithCancel(ctx)
		v, err := New(ctx, Config{JWKSURL: srv.url(), Logger: quietLogger()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		// The verifier's own context, not New's, carries its fetches.
		tok := sign(t, jwt.SigningMethodRS256, k.rsa2, "rotated", claims(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "iat": nil}))
		srv.set(okKey, pubJWK(t, "rotated", jwkset.AlgRS256, &k.rsa2.PublicKey))
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("unknown-kid refetch after New's ctx ended: %v", err)
		}
	})
	t.Run("HTTPClient is used", func(t *testing.T) {
		var used atomic.Bool
		srv := newJWKSServer(t, okKey)
		hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			used.Store(true)
			return http.DefaultTransport.RoundTrip(r)
		})}
		v, err := New(ctx, Config{JWKSURL: srv.url(), HTTPClient: hc, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		v.Close()
		if !used.Load() {
			t.Fatal("Config.HTTPClient not used")
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		if _, err := New(ctx, Config{Secret: "short"}); err == nil || !strings.Contains(err.Error(), "CUSTOMER_JWT_SECRET") {
			t.Fatalf("short secret: %v", err)
		}
		if _, err := New(ctx, Config{}); err == nil {
			t.Fatal("no key: New succeeded")
		}
	})
	t.Run("secret only needs no network", func(t *testing.T) {
		v, err := New(ctx, Config{Secret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		v.Close()
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestConfigCheck(t *testing.T) {
	secret31 := strings.Repeat("s", 31)
	tests := []struct {
		name    string
		cfg     Config
		enabled bool
		wantErr string // substring; empty: valid
	}{
		{name: "empty", cfg: Config{}},
		{name: "secret of 32 bytes", cfg: Config{Secret: strings.Repeat("s", 32)}, enabled: true},
		{name: "secret of 31 bytes", cfg: Config{Secret: secret31}, enabled: true, wantErr: "CUSTOMER_JWT_SECRET"},
		{name: "secret of 31 bytes in 11 characters", cfg: Config{Secret: strings.Repeat("€", 10) + "s"}, enabled: true, wantErr: "CUSTOMER_JWT_SECRET"},
		{name: "https", cfg: Config{JWKSURL: "https://login.example.com/.well-known/jwks.json"}, enabled: true},
		{name: "http to 127.0.0.1", cfg: Config{JWKSURL: "http://127.0.0.1:8081/jwks"}, enabled: true},
		{name: "http to 127.1.2.3", cfg: Config{JWKSURL: "http://127.1.2.3/jwks"}, enabled: true},
		{name: "http to localhost", cfg: Config{JWKSURL: "http://localhost:9000/jwks"}, enabled: true},
		{name: "http to [::1]", cfg: Config{JWKSURL: "http://[::1]:9000/jwks"}, enabled: true},
		{name: "http to a remote host", cfg: Config{JWKSURL: "http://login.example.com/jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "http to a private address", cfg: Config{JWKSURL: "http://10.0.0.5/jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "http to localhost.evil.example", cfg: Config{JWKSURL: "http://localhost.evil.example/jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "other scheme", cfg: Config{JWKSURL: "ftp://login.example.com/jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "no scheme", cfg: Config{JWKSURL: "login.example.com/jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "no host", cfg: Config{JWKSURL: "https:///jwks"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "not a URL", cfg: Config{JWKSURL: "https://exa mple.com/%zz"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "control character", cfg: Config{JWKSURL: "https://example.com/\n"}, enabled: true, wantErr: "CUSTOMER_JWKS_URL"},
		{name: "both", cfg: Config{Secret: testSecret, JWKSURL: "https://login.example.com/jwks", Issuer: testIssuer, Audience: testAudience}, enabled: true},
		{name: "both wrong", cfg: Config{Secret: secret31, JWKSURL: "http://example.com"}, enabled: true, wantErr: "CUSTOMER_JWT_SECRET"},
		{name: "issuer without a key", cfg: Config{Issuer: testIssuer}, wantErr: "CUSTOMER_JWT_ISSUER"},
		{name: "audience without a key", cfg: Config{Audience: testAudience}, wantErr: "CUSTOMER_JWT_AUDIENCE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.Enabled(); got != tc.enabled {
				t.Errorf("Enabled() = %v, want %v", got, tc.enabled)
			}
			err := tc.cfg.Check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check = %v, want an error naming %s", err, tc.wantErr)
			}
			if tc.cfg.Secret != "" && strings.Contains(err.Error(), tc.cfg.Secret) {
				t.Fatal("the error quotes the secret")
			}
		})
	}
}
