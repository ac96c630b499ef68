package customer

// Token rules: what Verify accepts and refuses (HS256 and JWKS algorithms,
// time claims, sub, iss and aud, algorithm confusion, malformed tokens), the
// verdict cache, and the benchmark. Fixtures in customer_test.go.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

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
