package events_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"flashsale/signing"
)

// A shop's receiver for order events (docs/events.md shows it): verify
// the signature on the raw body, then deduplicate by the event's id, since
// an event may arrive more than once. Here the "database" is a map; a real
// receiver stores the id with a unique constraint, in the same transaction
// as what it does with the event, and answers 2xx only after it committed.
func Example_receiver() {
	secret := "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // EVENTS_WEBHOOK_SECRET
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				Sequence int `json:"sequence"`
				Order    struct {
					ID     string `json:"id"`
					Status string `json:"status"`
				} `json:"order"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[ev.ID] {
			w.WriteHeader(http.StatusNoContent) // a redelivery: done already
			return
		}
		seen[ev.ID] = true
		fmt.Printf("%s #%d: order %s is %s\n", ev.Type, ev.Data.Sequence, ev.Data.Order.ID, ev.Data.Order.Status)
		w.WriteHeader(http.StatusNoContent)
	})

	// The server signs its events like this (package signing); the same
	// event twice is handled once.
	signer, _ := signing.NewSigner(secret)
	body := []byte(`{"id":"evt_01a24e88f5bfba6cfd116d40bdf5ff0d","type":"order.paid","occurredAt":"2026-12-07T03:25:28.382824Z",` +
		`"data":{"sequence":2,"reason":null,"order":{"id":"01a24e88-f5a6-7d81-a4aa-30d4481e7016","status":"PAID"}}}`)
	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "/flashsale/events", bytes.NewReader(body))
		_ = signer.Sign(req.Header, "evt_01a24e88f5bfba6cfd116d40bdf5ff0d", time.Now(), body)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// order.paid #2: order 01a24e88-f5a6-7d81-a4aa-30d4481e7016 is PAID
	// 204
	// 204
}
