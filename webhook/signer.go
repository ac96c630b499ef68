package webhook

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Signer signs deliveries the way the payment provider does. The server
// never signs; the load tool, the cluster test and the tests use it, so
// there is one way to call the webhook.
type Signer struct{ wh *standardwebhooks.Webhook }

// NewSigner returns a signer for a WEBHOOK_SECRET ("whsec_" + base64).
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
// of a delivery of body, made at ts.
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
