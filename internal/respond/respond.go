// Package respond writes the server's own JSON answers (health checks, the
// payment webhook's answers, requests refused before GraphQL runs), so
// they all carry the same headers: a JSON content type, and nosniff so a
// browser never reads one as something else.
package respond

import (
	"encoding/json"
	"net/http"
)

// JSON answers with status and v as JSON.
func JSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
