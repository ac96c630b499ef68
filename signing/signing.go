// Package signing owns Standard Webhooks secrets and signatures
// (https://www.standardwebhooks.com): reading a "whsec_" secret, and
// signing a message the way the payment provider signs its webhook calls
// and the server signs the order events it sends. Verifying an incoming
// call is package webhook's.
package signing

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// MinKeyLen is the shortest signing key accepted, as the contract and
// Standard Webhooks (24 to 64 bytes) ask.
const MinKeyLen = 24

const secretPrefix = "whsec_"

// HowToMakeSecret tells an operator how to make a good secret.
const HowToMakeSecret = `make one with: echo "whsec_$(openssl rand -base64 32)"`

// ParseSecret returns the key of a "whsec_<base64>" secret. Its errors
// describe the problem without quoting the secret (base64's own errors
// only give an offset) and say how to make a good one.
func ParseSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(secret), secretPrefix)
	if !ok {
		return nil, fmt.Errorf("must start with %q; %s", secretPrefix, HowToMakeSecret)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after %q is not valid base64 (%w); %s", secretPrefix, err, HowToMakeSecret)
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("key is %d bytes, want at least %d random bytes; %s", len(key), MinKeyLen, HowToMakeSecret)
	}
	return key, nil
}

// ParseSecrets returns the keys of a space-separated list of secrets (a
// provider's key is rotated by listing the new one beside the old). Errors
// say which one, by position, never quoting it.
func ParseSecrets(list string) ([][]byte, error) {
	var keys [][]byte
	fields := strings.Fields(list)
	for i, s := range fields {
		key, err := ParseSecret(s)
		if err != nil {
			if len(fields) > 1 {
				err = fmt.Errorf("secret %d of %d: %w", i+1, len(fields), err)
			}
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// Signer signs messages with one secret.
type Signer struct{ wh *standardwebhooks.Webhook }

// NewSigner returns a signer for a "whsec_" + base64 secret.
func NewSigner(secret string) (*Signer, error) {
	key, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	wh, err := standardwebhooks.NewWebhookRaw(key)
	if err != nil {
		return nil, err
	}
	return &Signer{wh: wh}, nil
}

// Sign sets the webhook-id, webhook-timestamp and webhook-signature headers
// of a message with body, sent at ts.
func (s *Signer) Sign(h http.Header, msgID string, ts time.Time, body []byte) error {
	sig, err := s.wh.Sign(msgID, ts, body)
	if err != nil {
		return fmt.Errorf("sign webhook: %w", err)
	}
	h.Set(standardwebhooks.HeaderWebhookID, msgID)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	return nil
}
