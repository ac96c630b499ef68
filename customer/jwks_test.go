package customer

// The JWK Set: key rotation, refetches for unknown kids (rate limit,
// concurrency, cancellation), the background refresh and failed refetches.
// Fixtures in customer_test.go.

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

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
