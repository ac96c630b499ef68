package customer

// Fixtures shared by the verifier's tests: keys, a JWKS server that a test
// can change, a verifier on a fixed clock, claims and signing helpers. The
// tests are in verifier_test.go (token rules: HS256, JWKS algorithms,
// claims, malformed tokens; the verdict cache), jwks_test.go (key rotation,
// unknown kids, refresh) and config_test.go (New and Config.Check).

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testSecret   = "0123456789abcdef0123456789abcdef-test-secret"
	testIssuer   = "https://login.shop.example"
	testAudience = "flashsale"
)

// testNow is the verifiers' clock in the tests that pass a fixed one.
var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

type testKeySet struct {
	rsa, rsa2, rsaOther *rsa.PrivateKey
	ec                  *ecdsa.PrivateKey
	ec384               *ecdsa.PrivateKey
	ed                  ed25519.PrivateKey
}

// keys are made once: RSA key generation is slow under -race.
var keys = sync.OnceValue(func() testKeySet {
	var k testKeySet
	var err error
	must := func(e error) {
		if e != nil {
			panic(e)
		}
	}
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// pubJWK is the public JWK of key under kid; alg may be empty.
func pubJWK(t testing.TB, kid string, alg jwkset.ALG, key any) jwkset.JWK {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig},
	})
	if err != nil {
		t.Fatalf("JWK %s: %v", kid, err)
	}
	return j
}

// jwksServer serves a JWK Set that a test can change, and counts requests.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	keys   []jwkset.JWK
	body   []byte // when set, served instead of keys
	status int
	delay  time.Duration
	hits   atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...jwkset.JWK) *jwksServer {
	t.Helper()
	s := &jwksServer{keys: keys, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	keys, body, status, delay := s.keys, s.body, s.status, s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if body == nil {
		set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
		for _, k := range keys {
			set.Keys = append(set.Keys, k.Marshal())
		}
		body, _ = json.Marshal(set)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// set replaces the served keys (a key rotation).
func (s *jwksServer) set(keys ...jwkset.JWK) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *jwksServer) setDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

func (s *jwksServer) url() string { return s.URL + "/.well-known/jwks.json" }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testVerifier makes a verifier on the fixed clock testNow, closed at the
// end of the test.
func testVerifier(t testing.TB, cfg Config, mods ...func(*options)) *Verifier {
	t.Helper()
	o := defaultOptions()
	o.now = func() time.Time { return testNow }
	for _, m := range mods {
		m(&o)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	v, err := newVerifier(context.Background(), cfg, o)
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// claims are valid claims at testNow; mods change them (nil deletes).
func claims(mods map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "cust-42",
		"iss": testIssuer,
		"aud": testAudience,
		"iat": testNow.Add(-time.Minute).Unix(),
		"exp": testNow.Add(10 * time.Minute).Unix(),
	}
	for k, v := range mods {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// unsigned hand-crafts a token with the given header and no signature.
func unsigned(t testing.TB, header string, c jwt.MapClaims, sig string) string {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(body) + "." + sig
}

func rsaPublicBytes(t testing.TB, k *rsa.PrivateKey) (pemBytes, der []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), der
}

// checkRefused fails unless err is an ErrInvalidToken with exactly reason,
// and does not quote the token.
func checkRefused(t *testing.T, err error, token, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %q", reason)
	}
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("error %v does not wrap ErrInvalidToken", err)
	}
	if want := "invalid customer token: " + reason; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if len(token) > 8 && strings.Contains(err.Error(), token) {
		t.Fatalf("error quotes the token")
	}
}
