package customer

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// ErrInvalidToken is wrapped by every error Verify returns.
var ErrInvalidToken = errors.New("invalid customer token")

const (
	// MaxTokenLen is the longest token Verify parses; a longer one is
	// refused before any decoding (a cheap guard against oversized input).
	MaxTokenLen = 8 << 10
	// MaxSubjectLen is the most characters a customer ID (sub) may have.
	MaxSubjectLen = 255
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 30 * time.Second
	// MaxCachedTokens bounds the verdicts kept for HS256 tokens (see
	// Verifier): at most about 64 bytes plus the sub each.
	MaxCachedTokens = 1 << 16
)

// The algorithms a token may name: HS256 with the secret, the others with
// the JWKS.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

// tokenError is a verification failure. Its message is ErrInvalidToken's,
// then a reason safe to show a client; it never contains the token. The
// values are made once, so a refused token costs no allocation for its error.
type tokenError struct{ msg string }

func (e *tokenError) Error() string { return e.msg }
func (e *tokenError) Unwrap() error { return ErrInvalidToken }

func reason(why string) *tokenError {
	return &tokenError{msg: ErrInvalidToken.Error() + ": " + why}
}

var (
	errNoToken       = reason("no token")
	errTooLarge      = reason("token too large")
	errMalformed     = reason("malformed token")
	errAlg           = reason("signing algorithm not allowed")
	errUnknownKey    = reason("unknown signing key")
	errKeyMismatch   = reason("signing key does not match the token's algorithm")
	errSignature     = reason("invalid signature")
	errNoExp         = reason("token has no exp")
	errExpired       = reason("token expired")
	errNotYetValid   = reason("token not valid yet")
	errIssuedFuture  = reason("token issued in the future")
	errIssuer        = reason("wrong issuer")
	errAudience      = reason("wrong audience")
	errNoSubject     = reason("token has no sub")
	errLongSubject   = reason("sub longer than 255 characters")
	errSubjectChars  = reason("sub has control characters or is not UTF-8")
	errCrit          = reason("token has a crit header, and this server understands no extensions (RFC 7515 4.1.11)")
	errInvalidClaims = reason("invalid claims")
)

// Verifier checks customer tokens. It is safe for concurrent use.
//
// A buyer sends the same token with every request, and parsing it (base64,
// JSON, HMAC) costs about as much as the rest of a small GraphQL request. So
// an accepted HS256 token's verdict is kept, keyed by the token's SHA-256,
// until its exp (plus leeway): sending it again costs a hash and a lookup.
// Nothing else a verdict depends on can change while the process runs (the
// secret, issuer and audience are fixed at start; nbf and iat only pass).
// Tokens checked with JWKS keys are verified every time, so a key the
// issuer removes from its set stops verifying at the next refetch.
type Verifier struct {
	secret   any       // HS256 key as a []byte, boxed once (not on every Verify); nil without CUSTOMER_JWT_SECRET
	jwks     *jwksKeys // nil without CUSTOMER_JWKS_URL
	parser   *jwt.Parser
	issuer   string
	audience string
	now      func() time.Time
	verdicts *lru.Cache[[sha256.Size]byte, verdict] // accepted HS256 tokens
}

// verdict is an accepted token: its customer, and when it stops being valid.
type verdict struct {
	sub     string
	expires time.Time // exp + Leeway
}

// options are the verifier's tunables that the environment does not set;
// tests shorten them.
type options struct {
	now             func() time.Time // clock for exp, nbf and iat
	unknownKIDEvery time.Duration    // least time between two unknown-kid refetches
	refreshInterval time.Duration    // background refetch of the JWKS
	fetchTimeout    time.Duration    // bound on one JWKS fetch
}

func defaultOptions() options {
	return options{
		now:             time.Now,
		unknownKIDEvery: time.Minute,
		refreshInterval: time.Hour,
		fetchTimeout:    10 * time.Second,
	}
}

// New returns a verifier; with a JWKS URL it fetches the key set once now
// and fails if it cannot (the server refuses to start without its keys);
// ctx bounds that first fetch and the background refresh lives until Close.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	return newVerifier(ctx, cfg, defaultOptions())
}

func newVerifier(ctx context.Context, cfg Config, o options) (*Verifier, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("customer: no key configured (CUSTOMER_JWT_SECRET or CUSTOMER_JWKS_URL)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience, now: o.now}
	var methods []string
	if cfg.Secret != "" {
		v.secret = []byte(cfg.Secret)
		methods = append(methods, algHS256)
		v.verdicts, _ = lru.New[[sha256.Size]byte, verdict](MaxCachedTokens) // errors only for size <= 0
	}
	if cfg.JWKSURL != "" {
		k, err := newJWKSKeys(ctx, cfg, o, log)
		if err != nil {
			return nil, err
		}
		v.jwks = k
		methods = append(methods, algRS256, algES256, algEdDSA)
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods), // alg "none" and every other alg are refused before any key is looked up
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), // iat, when present, may not be in the future
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(o.now),
		jwt.WithStrictDecoding(), // one base64 spelling per token
	}
	if cfg.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		popts = append(popts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

// Verify checks a bearer token and returns the customer ID (the token's sub).
// Any failure wraps ErrInvalidToken; the message after it says why in words
// safe to show a client ("token expired", "wrong issuer", ...), never the token.
//
// token is the credential alone, without the "Bearer " scheme. ctx bounds the
// wait for a JWKS refetch when the token names an unknown kid; with a known
// kid or the secret, Verify does no I/O.
func (v *Verifier) Verify(ctx context.Context, token string) (string, error) {
	sub, _, err := v.VerifyUntil(ctx, token)
	return sub, err
}

// VerifyUntil is Verify, and also says until when the token is good: its
// exp plus Leeway. A connection that outlives that must stop acting for
// the customer.
func (v *Verifier) VerifyUntil(ctx context.Context, token string) (sub string, until time.Time, err error) {
	if token == "" {
		return "", time.Time{}, errNoToken
	}
	if len(token) > MaxTokenLen {
		return "", time.Time{}, errTooLarge
	}
	var sum [sha256.Size]byte
	if v.verdicts != nil {
		sum = sha256.Sum256([]byte(token))
		if vd, ok := v.verdicts.Get(sum); ok {
			if v.now().Before(vd.expires) {
				return vd.sub, vd.expires, nil
			}
			v.verdicts.Remove(sum) // expired: the parse below says so
		}
	}
	var claims jwt.RegisteredClaims
	tok, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		return v.key(ctx, t)
	})
	if err != nil {
		return "", time.Time{}, v.explain(tok, &claims, err)
	}
	if err := checkSubject(claims.Subject); err != nil {
		return "", time.Time{}, err
	}
	until = claims.ExpiresAt.Add(Leeway)
	if v.verdicts != nil && tok.Method.Alg() == algHS256 {
		v.verdicts.Add(sum, verdict{sub: claims.Subject, expires: until})
	}
	return claims.Subject, until, nil
}

// checkSubject applies the contract's rule to a customer ID: 1 to 255
// characters, and none of them a control character (a NUL or a newline
// would end up in logs and keys).
func checkSubject(sub string) error {
	switch {
	case sub == "":
		return errNoSubject
	case len(sub) > MaxSubjectLen && utf8.RuneCountInString(sub) > MaxSubjectLen:
		return errLongSubject
	case !utf8.ValidString(sub) || strings.ContainsFunc(sub, unicode.IsControl):
		return errSubjectChars
	}
	return nil
}

// Close stops the JWKS refresh.
func (v *Verifier) Close() {
	if v != nil && v.jwks != nil {
		v.jwks.close()
	}
}

// key is the jwt.Keyfunc: it picks the key by the token's alg, so an HS256
// token is only ever checked with the secret and the others only with JWKS
// keys of their own type.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// crit lists extensions the verifier must understand or refuse.
		return nil, errCrit
	}
	switch t.Method.Alg() {
	case algHS256:
		if v.secret != nil {
			return v.secret, nil
		}
	case algRS256, algES256, algEdDSA:
		if v.jwks != nil {
			return v.jwks.key(ctx, t)
		}
	}
	return nil, errAlg
}

func (v *Verifier) allowed(alg string) bool {
	switch alg {
	case algHS256:
		return v.secret != nil
	case algRS256, algES256, algEdDSA:
		return v.jwks != nil
	}
	return false
}

// explain turns a jwt error into one of the reasons above. jwt/v5 checks in
// this order: format, alg, key, signature, then claims.
func (v *Verifier) explain(tok *jwt.Token, c *jwt.RegisteredClaims, err error) error {
	var te *tokenError
	switch {
	case errors.As(err, &te): // from key
		return te
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable): // alg missing or unknown to jwt
		return errAlg
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok == nil || tok.Method == nil || !v.allowed(tok.Method.Alg()) {
			return errAlg // WithValidMethods refused it
		}
		return errSignature
	case !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return errInvalidClaims
	case c.ExpiresAt == nil:
		return errNoExp
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedFuture
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), v.issuer != "" && c.Issuer != v.issuer:
		return errIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience), v.audience != "" && len(c.Audience) == 0:
		return errAudience
	}
	return errInvalidClaims
}
