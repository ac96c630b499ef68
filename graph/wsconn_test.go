package graph

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

func TestAuthorizationOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload transport.InitPayload
		want    string
		given   bool
		bad     bool
	}{
		{"none", nil, "", false, false},
		{"other keys", transport.InitPayload{"locale": "de"}, "", false, false},
		{"empty counts as none", transport.InitPayload{"Authorization": " "}, "", false, false},
		{"canonical", transport.InitPayload{"Authorization": "Bearer x"}, "Bearer x", true, false},
		{"any case", transport.InitPayload{"aUTHORIZATION": "Bearer x"}, "Bearer x", true, false},
		{"not a string", transport.InitPayload{"authorization": 42}, "", true, true},
		{"two keys", transport.InitPayload{"Authorization": "Bearer x", "authorization": "Bearer y"}, "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, given, err := authorizationOf(tc.payload)
			if tc.bad {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("err %v, want ErrUnauthenticated", err)
				}
				return
			}
			if err != nil || got != tc.want || given != tc.given {
				t.Fatalf("(%q, %v, %v), want (%q, %v, nil)", got, given, err, tc.want, tc.given)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		header       map[string]string
		want         streamKind
	}{
		{"WebSocket", "GET", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, webSocket},
		{"WebSocket, token list", "GET", map[string]string{"Upgrade": "foo, WebSocket"}, webSocket},
		{"other upgrade", "GET", map[string]string{"Upgrade": "h2c"}, notStream},
		{"POST asking to upgrade", "POST", map[string]string{"Upgrade": "websocket"}, notStream},
		{"SSE", "POST", map[string]string{"Accept": "text/event-stream"}, eventStream},
		{"GET asking for SSE", "GET", map[string]string{"Accept": "text/event-stream"}, notStream},
		{"plain POST", "POST", map[string]string{"Accept": "application/json"}, notStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/graphql", http.NoBody)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			if got := kindOf(r); got != tc.want {
				t.Fatalf("kindOf = %d, want %d", got, tc.want)
			}
		})
	}
}
