package customer

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

func TestVerify(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t,
		pubJWK(t, "rsa-1", jwkset.AlgRS256, &k.rsa.PublicKey),
		pubJWK(t, "rsa-noalg", "", &k.rsa2.PublicKey),
		pubJWK(t, "ec-1", jwkset.AlgES256, &k.ec.PublicKey),
		pubJWK(t, "ec-384", "", &k.ec384.PublicKey),
		pubJWK(t, "ed-1", jwkset.AlgEdDSA, k.ed.Public()),
	)
	both := testVerifier(t, Config{Secret: testSecret, JWKSURL: srv.url(), Issuer: testIssuer, Audience: testAudience})
	hsOnly := testVerifier(t, Config{Secret: testSecret})
	jwksOnly := testVerifier(t, Config{JWKSURL: srv.url()})
	hitsAtStart := srv.hits.Load()

	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c) }
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", c) }
	pemBytes, der := rsaPublicBytes(t, k.rsa)
	sec := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	long := strings.Repeat("x", 256)
	wide := strings.Repeat("é", 255) // 255 characters, 510 bytes

	tampered := rs(claims(nil))
	{
		parts := strings.Split(tampered, ".")
		body, _ := json.Marshal(claims(map[string]any{"sub": "someone-else"}))
		parts[1] = base64.RawURLEncoding.EncodeToString(body)
		tampered = strings.Join(parts, ".")
	}
	huge := hs(claims(map[string]any{"pad": strings.Repeat("p", MaxTokenLen)}))

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		sub    string // accepted with this sub, or
		reason string // refused for this reason
	}{
		{name: "HS256", v: both, token: hs(claims(nil)), sub: "cust-42"},
		{name: "HS256 secret only", v: hsOnly, token: hs(claims(map[string]any{"iss": "anyone", "aud": nil})), sub: "cust-42"},
		{name: "RS256", v: both, token: rs(claims(nil)), sub: "cust-42"},
		{name: "RS256 JWK without alg", v: both, token: sign(t, jwt.SigningMethodRS256, k.rsa2, "rsa-noalg", claims(nil)), sub: "cust-42"},
		{name: "RS256 without kid", v: jwksOnly, token: sign(t, jwt.SigningMethodRS256, k.rsa2, "", claims(nil)), sub: "cust-42"},
		{name: "ES256", v: both, token: sign(t, jwt.SigningMethodES256, k.ec, "ec-1", claims(nil)), sub: "cust-42"},
		{name: "EdDSA", v: both, token: sign(t, jwt.SigningMethodEdDSA, k.ed, "ed-1", claims(nil)), sub: "cust-42"},
		{name: "JWKS only ignores iss and aud", v: jwksOnly, token: rs(claims(map[string]any{"iss": nil, "aud": "other"})), sub: "cust-42"},

		{name: "expired beyond leeway", v: both, token: rs(claims(map[string]any{"exp": sec(-31 * time.Second)})), reason: "token expired"},
		{name: "expired within leeway", v: both, token: rs(claims(map[string]any{"exp": sec(-29 * time.Second)})), sub: "cust-42"},
		{name: "expired HS256", v: hsOnly, token: hs(claims(map[string]any{"exp": sec(-time.Hour)})), reason: "token expired"},
		{name: "nbf in the future", v: both, token: rs(claims(map[string]any{"nbf": sec(31 * time.Second)})), reason: "token not valid yet"},
		{name: "nbf within leeway", v: both, token: rs(claims(map[string]any{"nbf": sec(29 * time.Second)})), sub: "cust-42"},
		{name: "iat in the future", v: both, token: hs(claims(map[string]any{"iat": sec(time.Minute)})), reason: "token issued in the future"},
		{name: "iat within leeway", v: both, token: hs(claims(map[string]any{"iat": sec(29 * time.Second)})), sub: "cust-42"},
		{name: "no iat", v: both, token: hs(claims(map[string]any{"iat": nil})), sub: "cust-42"},
		{name: "missing exp", v: both, token: rs(claims(map[string]any{"exp": nil})), reason: "token has no exp"},
		{name: "exp not a number", v: both, token: hs(claims(map[string]any{"exp": "tomorrow"})), reason: "malformed token"},

		{name: "missing sub", v: both, token: rs(claims(map[string]any{"sub": nil})), reason: "token has no sub"},
		{name: "empty sub", v: both, token: hs(claims(map[string]any{"sub": ""})), reason: "token has no sub"},
		{name: "sub of 256 characters", v: both, token: hs(claims(map[string]any{"sub": long})), reason: "sub longer than 255 characters"},
		{name: "sub of 255 characters", v: both, token: hs(claims(map[string]any{"sub": long[1:]})), sub: long[1:]},
		{name: "sub of 255 two-byte characters", v: both, token: hs(claims(map[string]any{"sub": wide})), sub: wide},
		{name: "sub of 256 two-byte characters", v: both, token: hs(claims(map[string]any{"sub": wide + "é"})), reason: "sub longer than 255 characters"},
		{name: "sub not a string", v: both, token: hs(claims(map[string]any{"sub": 42})), reason: "malformed token"},

		{name: "wrong iss", v: both, token: rs(claims(map[string]any{"iss": "https://evil.example"})), reason: "wrong issuer"},
		{name: "missing iss", v: both, token: hs(claims(map[string]any{"iss": nil})), reason: "wrong issuer"},
		{name: "wrong aud", v: both, token: rs(claims(map[string]any{"aud": "other-api"})), reason: "wrong audience"},
		{name: "missing aud", v: both, token: hs(claims(map[string]any{"aud": nil})), reason: "wrong audience"},
		{name: "aud list containing ours", v: both, token: hs(claims(map[string]any{"aud": []string{"other", testAudience}})), sub: "cust-42"},

		{name: "alg none", v: both, token: unsigned(t, `{"alg":"none","typ":"JWT"}`, claims(nil), ""), reason: "signing algorithm not allowed"},
		{name: "alg none with a signature", v: both, token: unsigned(t, `{"alg":"none","kid":"rsa-1"}`, claims(nil), "c2ln"), reason: "signing algorithm not allowed"},
		{name: "alg None", v: hsOnly, token: unsigned(t, `{"alg":"None"}`, claims(nil), ""), reason: "signing algorithm not allowed"},
		{name: "no alg", v: both, token: unsigned(t, `{"typ":"JWT"}`, claims(nil), ""), reason: "signing algorithm not allowed"},
		{name: "HS384 with the secret", v: both, token: sign(t, jwt.SigningMethodHS384, []byte(testSecret), "", claims(nil)), reason: "signing algorithm not allowed"},
		{name: "PS256 with a JWKS key", v: both, token: sign(t, jwt.SigningMethodPS256, k.rsa, "rsa-1", claims(nil)), reason: "signing algorithm not allowed"},
		{name: "RS256 without JWKS", v: hsOnly, token: rs(claims(nil)), reason: "signing algorithm not allowed"},

		// Algorithm confusion: an HS256 "signature" made with the public key's bytes.
		{name: "HS256 with RSA public PEM, JWKS only", v: jwksOnly, token: sign(t, jwt.SigningMethodHS256, pemBytes, "rsa-1", claims(nil)), reason: "signing algorithm not allowed"},
		{name: "HS256 with RSA public DER, JWKS only", v: jwksOnly, token: sign(t, jwt.SigningMethodHS256, der, "rsa-1", claims(nil)), reason: "signing algorithm not allowed"},
		{name: "HS256 with RSA public PEM, secret and JWKS", v: both, token: sign(t, jwt.SigningMethodHS256, pemBytes, "rsa-1", claims(nil)), reason: "invalid signature"},
		{name: "HS256 with RSA public DER, secret and JWKS", v: both, token: sign(t, jwt.SigningMethodHS256, der, "", claims(nil)), reason: "invalid signature"},
		{name: "HS256 with a wrong secret", v: both, token: sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("w", 40)), "", claims(nil)), reason: "invalid signature"},
		{name: "ES256 naming an RS256 JWK", v: both, token: sign(t, jwt.SigningMethodES256, k.ec, "rsa-1", claims(nil)), reason: "signing key does not match the token's algorithm"},
		{name: "ES256 naming an RSA JWK without alg", v: both, token: sign(t, jwt.SigningMethodES256, k.ec, "rsa-noalg", claims(nil)), reason: "signing key does not match the token's algorithm"},
		{name: "ES256 naming a P-384 JWK", v: both, token: sign(t, jwt.SigningMethodES256, k.ec, "ec-384", claims(nil)), reason: "signing key does not match the token's algorithm"},
		{name: "EdDSA naming an ES256 JWK", v: both, token: sign(t, jwt.SigningMethodEdDSA, k.ed, "ec-1", claims(nil)), reason: "signing key does not match the token's algorithm"},
		{name: "RS256 by another key", v: both, token: sign(t, jwt.SigningMethodRS256, k.rsaOther, "rsa-1", claims(nil)), reason: "invalid signature"},
		{name: "RS256 without kid by another key", v: both, token: sign(t, jwt.SigningMethodRS256, k.rsaOther, "", claims(nil)), reason: "invalid signature"},
		{name: "tampered claims", v: both, token: tampered, reason: "invalid signature"},
		{name: "kid not a string", v: both, token: unsigned(t, `{"alg":"RS256","kid":7}`, claims(nil), "c2ln"), reason: "malformed token"},

		{name: "empty", v: both, token: "", reason: "no token"},
		{name: "garbage", v: both, token: "garbage", reason: "malformed token"},
		{name: "three garbage parts", v: both, token: "a.b.c", reason: "malformed token"},
		{name: "four parts", v: both, token: hs(claims(nil)) + ".x", reason: "malformed token"},
		{name: "header not JSON", v: both, token: "bm90IGpzb24.e30.c2ln", reason: "malformed token"},
		{name: "bearer scheme left on", v: both, token: "Bearer " + hs(claims(nil)), reason: "malformed token"},
		{name: "over the size limit", v: both, token: huge, reason: "token too large"},
		{name: "just over the size limit", v: both, token: strings.Repeat("a", MaxTokenLen+1), reason: "token too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := tc.v.Verify(context.Background(), tc.token)
			if tc.reason != "" {
				checkRefused(t, err, tc.token, tc.reason)
				if sub != "" {
					t.Fatalf("refused, yet sub %q", sub)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if sub != tc.sub {
				t.Fatalf("sub %q, want %q", sub, tc.sub)
			}
		})
	}
	if got := srv.hits.Load(); got != hitsAtStart {
		t.Errorf("JWKS fetched %d times during the cases; every kid was known, want none", got-hitsAtStart)
	}
}

// A token whose kid the verifier has not seen makes it refetch the set once;
// the refetch replaces the set, so a removed key stops verifying.
func TestKeyRotation(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, pubJWK(t, "old", jwkset.AlgRS256, &k.rsa.PublicKey))
	v := testVerifier(t, Config{JWKSURL: srv.url()})
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches at New, want 1", got)
	}
	ctx := context.Background()
	oldTok := sign(t, jwt.SigningMethodRS256, k.rsa, "old", claims(nil))
	newTok := sign(t, jwt.SigningMethodRS256, k.rsa2, "new", claims(map[string]any{"sub": "cust-new"}))
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}

	srv.set(pubJWK(t, "new", jwkset.AlgRS256, &k.rsa2.PublicKey)) // old removed, new added
	sub, err := v.Verify(ctx, newTok)
	if err != nil || sub != "cust-new" {
		t.Fatalf("new key after rotation: %q, %v", sub, err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches after the unknown kid, want 2", got)
	}
	if _, err := v.Verify(ctx, newTok); err != nil {
		t.Fatalf("new key again: %v", err)
	}
	_, err = v.Verify(ctx, oldTok)
	checkRefused(t, err, oldTok, "unknown signing key")
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want still 2 (no refetch within the minute, none for known kids)", got)
	}
}

// Two unknown kids within the interval make one refetch; after the interval
// the next unknown kid refetches again.
func TestUnknownKIDRateLimit(t *testing.T) {
	k := keys()
	a := pubJWK(t, "a", jwkset.AlgES256, &k.ec.PublicKey)
	b := pubJWK(t, "b", jwkset.AlgRS256, &k.rsa.PublicKey)
	ctx := context.Background()
	bTok := sign(t, jwt.SigningMethodRS256, k.rsa, "b", claims(nil))

	t.Run("a minute", func(t *testing.T) {
		srv := newJWKSServer(t, a)
		v := testVerifier(t, Config{JWKSURL: srv.url()})
		_, err := v.Verify(ctx, bTok)
		checkRefused(t, err, bTok, "unknown signing key")
		if got := srv.hits.Load(); got != 2 {
			t.Fatalf("%d fetches after the first unknown kid, want 2", got)
		}
		srv.set(a, b)
		_, err = v.Verify(ctx, bTok)
		checkRefused(t, err, bTok, "unknown signing key")
		_, err = v.Verify(ctx, sign(t, jwt.SigningMethodRS256, k.rsa, "c", claims(nil)))
		checkRefused(t, err, "", "unknown signing key")
		if got := srv.hits.Load(); got != 2 {
			t.Fatalf("%d fetches after three unknown kids within a minute, want 2", got)
		}
	})

	t.Run("interval passed", func(t *testing.T) {
		srv := newJWKSServer(t, a)
		const every = 200 * time.Millisecond
		v := testVerifier(t, Config{JWKSURL: srv.url()}, func(o *options) { o.unknownKIDEvery = every })
		_, err := v.Verify(ctx, bTok)
		checkRefused(t, err, bTok, "unknown signing key")
		srv.set(a, b)
		_, err = v.Verify(ctx, bTok)
		checkRefused(t, err, bTok, "unknown signing key")
		if got := srv.hits.Load(); got != 2 {
			t.Fatalf("%d fetches within the interval, want 2", got)
		}
		time.Sleep(every + 50*time.Millisecond)
		if _, err := v.Verify(ctx, bTok); err != nil {
			t.Fatalf("after the interval: %v", err)
		}
		if got := srv.hits.Load(); got != 3 {
			t.Fatalf("%d fetches, want 3", got)
		}
	})
}

// Requests that name a new kid while its refetch is in flight wait for it
// and are accepted; the set is fetched once.
func TestUnknownKIDConcurrent(t *testing.T) {
	k := keys()
	old := pubJWK(t, "old", jwkset.AlgRS256, &k.rsa.PublicKey)
	srv := newJWKSServer(t, old)
	v := testVerifier(t, Config{JWKSURL: srv.url()})
	srv.setDelay(100 * time.Millisecond)
	srv.set(old, pubJWK(t, "new", jwkset.AlgES256, &k.ec.PublicKey))
	tok := sign(t, jwt.SigningMethodES256, k.ec, "new", claims(nil))

	const n = 32
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("refused during the refetch: %v", err)
		}
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
}

// A request cancelled while it waits for another's refetch gives up.
func TestUnknownKIDWaitHonoursContext(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, pubJWK(t, "old", jwkset.AlgRS256, &k.rsa.PublicKey))
	v := testVerifier(t, Config{JWKSURL: srv.url()})
	srv.setDelay(time.Second)
	tok := sign(t, jwt.SigningMethodRS256, k.rsa2, "new", claims(nil))

	first := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), tok)
		first <- err
	}()
	for srv.hits.Load() < 2 { // the first refetch is in flight
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Verify(ctx, tok)
	checkRefused(t, err, tok, "unknown signing key")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("waited %v past its context", d)
	}
	checkRefused(t, <-first, tok, "unknown signing key")
}

// The background refresh picks up removals, and Close stops it.
func TestBackgroundRefreshAndClose(t *testing.T) {
	k := keys()
	a := pubJWK(t, "a", jwkset.AlgRS256, &k.rsa.PublicKey)
	b := pubJWK(t, "b", jwkset.AlgEdDSA, k.ed.Public())
	srv := newJWKSServer(t, a, b)
	o := defaultOptions()
	o.refreshInterval = 20 * time.Millisecond
	v, err := newVerifier(context.Background(), Config{JWKSURL: srv.url(), Logger: quietLogger()}, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	srv.set(b) // a revoked
	deadline := time.Now().Add(5 * time.Second)
	for v.jwks.cached(context.Background(), "a") {
		if time.Now().After(deadline) {
			t.Fatal("the background refresh did not drop the removed key")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tok := sign(t, jwt.SigningMethodRS256, k.rsa, "a", claims(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "iat": nil}))
	_, err = v.Verify(context.Background(), tok)
	checkRefused(t, err, tok, "unknown signing key")

	v.Close()
	v.Close() // a second Close does nothing
	// Let a refresh that was in flight finish, then count.
	time.Sleep(50 * time.Millisecond)
	before := srv.hits.Load()
	time.Sleep(100 * time.Millisecond)
	if got := srv.hits.Load(); got != before {
		t.Fatalf("%d fetches after Close", got-before)
	}
}

// A failed refetch keeps the keys already fetched.
func TestRefetchFailureKeepsKeys(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, pubJWK(t, "a", jwkset.AlgRS256, &k.rsa.PublicKey))
	v := testVerifier(t, Config{JWKSURL: srv.url()})
	srv.mu.Lock()
	srv.status = http.StatusInternalServerError
	srv.mu.Unlock()
	unknown := sign(t, jwt.SigningMethodRS256, k.rsa2, "zz", claims(nil))
	_, err := v.Verify(context.Background(), unknown)
	checkRefused(t, err, unknown, "unknown signing key")
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k.rsa, "a", claims(nil))); err != nil {
		t.Fatalf("known key after a failed refetch: %v", err)
	}
}

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

// BenchmarkVerify measures Verify on a valid token, one per algorithm; the
// JWKS ones read cached keys (no fetch in the loop).
func BenchmarkVerify(b *testing.B) {
	k := keys()
	srv := newJWKSServer(b,
		pubJWK(b, "rsa", jwkset.AlgRS256, &k.rsa.PublicKey),
		pubJWK(b, "ec", jwkset.AlgES256, &k.ec.PublicKey),
		pubJWK(b, "ed", jwkset.AlgEdDSA, k.ed.Public()),
	)
	v, err := New(context.Background(), Config{
		Secret: testSecret, JWKSURL: srv.url(), Issuer: testIssuer, Audience: testAudience, Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	c := jwt.MapClaims{
		"sub": "cust-42", "iss": testIssuer, "aud": testAudience,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
	tokens := []struct {
		name, token string
	}{
		{"HS256", sign(b, jwt.SigningMethodHS256, []byte(testSecret), "", c)},
		{"RS256", sign(b, jwt.SigningMethodRS256, k.rsa, "rsa", c)},
		{"ES256", sign(b, jwt.SigningMethodES256, k.ec, "ec", c)},
		{"EdDSA", sign(b, jwt.SigningMethodEdDSA, k.ed, "ed", c)},
	}
	hits := srv.hits.Load()
	ctx := context.Background()
	for _, tc := range tokens {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("refused/expired HS256", func(b *testing.B) {
		tok := sign(b, jwt.SigningMethodHS256, []byte(testSecret), "", jwt.MapClaims{"sub": "x", "exp": time.Now().Add(-time.Hour).Unix()})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	b.Run("refused/unknown kid", func(b *testing.B) {
		tok := sign(b, jwt.SigningMethodRS256, k.rsa, "nope", c)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	if got := srv.hits.Load() - hits; got > 1 {
		b.Fatalf("%d JWKS fetches during the benchmark, want at most 1 (the unknown kid's)", got)
	}
}

// An accepted HS256 token is not parsed again while it is valid, and stops
// being accepted at exp plus the leeway all the same.
func TestVerdictCache(t *testing.T) {
	now := testNow
	v := testVerifier(t, Config{Secret: testSecret, Issuer: testIssuer, Audience: testAudience},
		func(o *options) { o.now = func() time.Time { return now } })
	ctx := context.Background()
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims(map[string]any{"exp": testNow.Add(time.Minute).Unix()}))
	if sub, err := v.Verify(ctx, tok); err != nil || sub != "cust-42" {
		t.Fatalf("first Verify: %q, %v", sub, err)
	}
	// A parse allocates dozens of times (base64, JSON, claims); a cached
	// verdict at most once (the token's bytes for the hash).
	if allocs := testing.AllocsPerRun(100, func() {
		if sub, err := v.Verify(ctx, tok); err != nil || sub != "cust-42" {
			t.Fatalf("cached Verify: %q, %v", sub, err)
		}
	}); allocs > 1 {
		t.Errorf("Verify of an accepted token allocates %.0f times: not served from the cache", allocs)
	}

	// Same claims, another signature: its own verdict, not the cached one.
	forged := tok[:len(tok)-4] + "AAAA"
	checkRefused(t, func() error { _, err := v.Verify(ctx, forged); return err }(), forged, "invalid signature")

	now = testNow.Add(time.Minute + Leeway - time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	now = testNow.Add(time.Minute + Leeway + time.Second)
	_, err := v.Verify(ctx, tok)
	checkRefused(t, err, tok, "token expired")
}
