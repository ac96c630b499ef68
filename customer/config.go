// Package customer owns customer tokens: it verifies the JWTs that a shop's
// own login system issues to its customers and turns a valid one into a
// customer ID (the token's sub). The API never issues customer tokens; it
// only checks them, with an HS256 secret (CUSTOMER_JWT_SECRET), with public
// keys from a JWKS endpoint (CUSTOMER_JWKS_URL), or both.
//
// Parsing and claim validation use github.com/golang-jwt/jwt/v5, the
// maintained, widely audited Go JWT library: it refuses alg "none" unless
// asked, restricts algorithms with WithValidMethods, and checks exp, nbf,
// iat, iss and aud with leeway. The key set uses
// github.com/MicahParks/keyfunc/v3 and github.com/MicahParks/jwkset, which it
// builds on: they parse RSA, EC and OKP (Ed25519) JWKs into Go keys, check a
// JWK's own alg against the token's, refresh the set in the background and
// refresh it on an unknown kid behind a rate limiter. Those are the parts
// where a hand-written verifier usually goes wrong.
package customer

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// MinSecretLen is the least number of bytes CUSTOMER_JWT_SECRET may have.
const MinSecretLen = 32

// Config is the verifier's configuration (from the environment).
type Config struct {
	Secret     string       // CUSTOMER_JWT_SECRET: HS256 key, its own bytes, at least 32 of them
	JWKSURL    string       // CUSTOMER_JWKS_URL: RS256, ES256 or EdDSA public keys
	Issuer     string       // CUSTOMER_JWT_ISSUER: when set, iss must equal it
	Audience   string       // CUSTOMER_JWT_AUDIENCE: when set, aud must contain it
	HTTPClient *http.Client // for the JWKS; nil: a client with a 10 s timeout
	Logger     *slog.Logger // nil: slog.Default()
}

// Enabled reports whether a customer key is configured (Secret or JWKSURL).
func (c Config) Enabled() bool { return c.Secret != "" || c.JWKSURL != "" }

// Check validates the configuration without network access: secret length
// (>= 32 bytes), JWKS URL is https, or http only to a loopback host (tests,
// local dev); errors name the variable and never quote the secret. An issuer
// or audience without any key is an error too: it means a key was forgotten,
// and the server would otherwise take every buyer as anonymous.
func (c Config) Check() error {
	var errs []error
	if c.Secret != "" && len(c.Secret) < MinSecretLen {
		errs = append(errs, errors.New("CUSTOMER_JWT_SECRET: must be at least 32 bytes long"))
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.Enabled() {
		if c.Issuer != "" {
			errs = append(errs, errors.New("CUSTOMER_JWT_ISSUER: set, but neither CUSTOMER_JWT_SECRET nor CUSTOMER_JWKS_URL is"))
		}
		if c.Audience != "" {
			errs = append(errs, errors.New("CUSTOMER_JWT_AUDIENCE: set, but neither CUSTOMER_JWT_SECRET nor CUSTOMER_JWKS_URL is"))
		}
	}
	return errors.Join(errs...)
}

// checkJWKSURL accepts an absolute https URL, or an http one to a loopback
// host. Its errors do not repeat the URL, which may carry credentials.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("CUSTOMER_JWKS_URL: not a valid URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("CUSTOMER_JWKS_URL: must be an absolute URL with a host, e.g. https://login.example.com/.well-known/jwks.json")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("CUSTOMER_JWKS_URL: must use https (plain http only to a loopback host such as 127.0.0.1 or localhost)")
	default:
		return errors.New("CUSTOMER_JWKS_URL: must use https")
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
