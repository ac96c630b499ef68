package customer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// maxJWKSBytes bounds a JWKS response; a real key set is a few KiB.
const maxJWKSBytes = 1 << 20

// jwksKeys holds the public keys of CUSTOMER_JWKS_URL.
//
// jwkset fetches the set into cache at start, again every refreshInterval in
// its own goroutine, and again when keyfunc asks client for a kid that cache
// lacks; that refetch is gated by limiter (jwkset's RefreshUnknownKID), one
// token per unknownKIDEvery (a minute). A refetch replaces the whole cache,
// so a key the issuer removed stops verifying.
//
// The hot path (a known kid) only reads cache: no I/O, no lock but cache's
// read lock. A kid missing from cache goes through fetchUnknown, which lets
// one such lookup run at a time: requests that arrive while a refetch is in
// flight wait for it and then find the new key in cache, instead of failing
// because the limiter's token is spent. When the limiter has no token (a
// refetch less than a minute ago), an unknown kid is refused at once rather
// than waiting for the next slot.
type jwksKeys struct {
	cache   *jwkset.MemoryJWKSet // the keys of the last successful fetch; reading it never fetches
	client  jwkset.Storage       // cache, plus a refetch on an unknown kid gated by limiter
	kf      keyfunc.Keyfunc      // over client: kid lookup, JWK alg and use checks
	limiter *rate.Limiter
	sem     chan struct{} // one unknown-kid lookup at a time
	cancel  context.CancelFunc
	log     *slog.Logger
	url     string // for logs, password redacted
}

func newJWKSKeys(ctx context.Context, cfg Config, o options, log *slog.Logger) (*jwksKeys, error) {
	logURL := cfg.JWKSURL
	if u, err := url.Parse(cfg.JWKSURL); err == nil {
		logURL = u.Redacted()
	}
	// The background refresh outlives ctx (until Close); ctx only bounds the
	// first fetch, which NewStorageFromHTTP makes with the same context.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	cache := jwkset.NewMemoryStorage()
	store, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:          jwksHTTPClient(cfg.HTTPClient, o.fetchTimeout),
		Ctx:             bg,
		HTTPTimeout:     o.fetchTimeout,
		RefreshInterval: o.refreshInterval,
		RefreshErrorHandler: func(ctx context.Context, err error) {
			log.WarnContext(ctx, "customer: fetching the JWKS failed; keeping the keys already fetched",
				"url", logURL, "error", err)
		},
		Storage: cache,
		// NoErrorReturnFirstHTTPReq stays false: without its keys, New fails.
	})
	if !stop() {
		cancel()
		return nil, fmt.Errorf("CUSTOMER_JWKS_URL: fetching the key set: %w", context.Cause(ctx))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("CUSTOMER_JWKS_URL: fetching the key set: %w", err)
	}
	limiter := rate.NewLimiter(rate.Every(o.unknownKIDEvery), 1)
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{cfg.JWKSURL: store},
		PrioritizeHTTP:    true, // read the fetched keys first: the (empty) given storage is never hit
		RateLimitWaitMax:  o.fetchTimeout,
		RefreshUnknownKID: limiter,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("CUSTOMER_JWKS_URL: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:          bg,
		Storage:      client,
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}, // never an "enc" key
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("CUSTOMER_JWKS_URL: %w", err)
	}
	k := &jwksKeys{
		cache:   cache,
		client:  client,
		kf:      kf,
		limiter: limiter,
		sem:     make(chan struct{}, 1),
		cancel:  cancel,
		log:     log,
		url:     logURL,
	}
	n := k.usable(ctx)
	if n == 0 {
		cancel()
		return nil, errors.New("CUSTOMER_JWKS_URL: the key set has no RS256, ES256 or EdDSA signing key")
	}
	log.InfoContext(ctx, "customer: JWKS fetched", "url", logURL, "keys", n)
	return k, nil
}

func (k *jwksKeys) close() { k.cancel() }

// key returns the key for an RS256, ES256 or EdDSA token: the JWK its kid
// names, or, without a kid, every key of the set that fits its alg.
func (k *jwksKeys) key(ctx context.Context, t *jwt.Token) (any, error) {
	if h, ok := t.Header[jwkset.HeaderKID]; ok {
		kid, ok := h.(string)
		if !ok {
			return nil, errMalformed
		}
		if !k.cached(ctx, kid) {
			if err := k.fetchUnknown(ctx, kid); err != nil {
				return nil, err
			}
		}
	}
	key, err := k.kf.KeyfuncCtx(ctx)(t)
	if err != nil {
		if errors.Is(err, jwkset.ErrKeyNotFound) {
			return nil, errUnknownKey
		}
		return nil, errKeyMismatch // the JWK's own alg differs, or its use is not "sig"
	}
	// keyfunc compares the token's alg with the JWK's alg only when the JWK
	// has one; the key's own type must fit in every case (no HS256 with a
	// public key's bytes, no ES256 with an RSA or P-384 key).
	alg := t.Method.Alg()
	if set, ok := key.(jwt.VerificationKeySet); ok {
		fit := set.Keys[:0] // keyfunc made this slice for this call
		for _, key := range set.Keys {
			if fits(alg, key) {
				fit = append(fit, key)
			}
		}
		if len(fit) == 0 {
			return nil, errUnknownKey
		}
		return jwt.VerificationKeySet{Keys: fit}, nil
	}
	if !fits(alg, key) {
		return nil, errKeyMismatch
	}
	return key, nil
}

func (k *jwksKeys) cached(ctx context.Context, kid string) bool {
	_, err := k.cache.KeyRead(ctx, kid)
	return err == nil
}

// fetchUnknown refetches the set for a kid that cache lacks, unless the set
// was refetched less than unknownKIDEvery ago (then the kid is unknown).
func (k *jwksKeys) fetchUnknown(ctx context.Context, kid string) error {
	select {
	case k.sem <- struct{}{}:
	case <-ctx.Done():
		return errUnknownKey
	}
	defer func() { <-k.sem }()
	if k.cached(ctx, kid) {
		return nil // fetched while this request waited
	}
	// Only this function spends the limiter's tokens, one call at a time, so
	// a token seen here is still there when jwkset waits for it: jwkset
	// never blocks. Without one, refuse now instead of holding the request
	// until the next slot.
	if k.limiter.Tokens() < 1 {
		return errUnknownKey
	}
	// The fetch is not cut short by the request going away: the next
	// customer with the new key would otherwise wait a minute. jwkset bounds
	// it by RateLimitWaitMax (fetchTimeout).
	_, err := k.client.KeyRead(context.WithoutCancel(ctx), kid)
	k.log.InfoContext(ctx, "customer: JWKS refetched for a token with an unknown kid",
		"url", k.url, "found", err == nil)
	if err != nil {
		return errUnknownKey
	}
	return nil
}

// usable counts the keys of the set that can verify a token.
func (k *jwksKeys) usable(ctx context.Context) int {
	keys, err := k.cache.KeyReadAll(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for _, j := range keys {
		m := j.Marshal()
		if m.USE != jwkset.UseSig && m.USE != "" {
			continue
		}
		key := j.Key()
		if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
			key = pk.Public()
		}
		for _, alg := range [...]string{algRS256, algES256, algEdDSA} {
			if (m.ALG == "" || m.ALG.String() == alg) && fits(alg, key) {
				n++
				break
			}
		}
	}
	return n
}

// fits reports whether key is a public key of the type alg needs. RSA keys
// must have at least 2048 bits (RFC 7518, section 3.3).
func fits(alg string, key any) bool {
	switch key := key.(type) {
	case *rsa.PublicKey:
		return alg == algRS256 && key.N != nil && key.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == algES256 && key.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == algEdDSA && len(key) == ed25519.PublicKeySize
	}
	return false
}

// jwksHTTPClient returns a copy of c (nil: a client with the fetch timeout)
// whose responses are cut at maxJWKSBytes.
func jwksHTTPClient(c *http.Client, timeout time.Duration) *http.Client {
	var hc http.Client
	if c != nil {
		hc = *c
	} else {
		hc.Timeout = timeout
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = limitedBody{base: base}
	return &hc
}

type limitedBody struct{ base http.RoundTripper }

func (t limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if resp != nil && resp.Body != nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxJWKSBytes), resp.Body}
	}
	return resp, err
}
