package nomadtest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// writeText answers with a text/plain body and no trailing newline: every
// Nomad error body is plain text, never JSON (facts 4.4).
func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// writeJSON answers with v encoded as JSON, without the trailing newline
// json.Encoder adds, as Nomad does.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Nomad's encoder leaves <, > and & alone.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// setReadHeaders sets the three headers every read carries, including 404s
// and blocking-query timeouts (facts 4.2, 4.4, 4.9).
func setReadHeaders(w http.ResponseWriter, index uint64) {
	h := w.Header()
	h.Set("X-Nomad-Index", strconv.FormatUint(index, 10))
	h.Set("X-Nomad-Knownleader", "true")
	h.Set("X-Nomad-Lastcontact", "0")
}

// setWriteIndex sets the only X-Nomad header a write carries (fact 01).
func setWriteIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
}

// invalidMethod is the answer to a known path with the wrong method (69b).
func invalidMethod(w http.ResponseWriter) {
	writeText(w, http.StatusMethodNotAllowed, "Invalid method")
}

// requestNamespace is the namespace a single-object request targets:
// ?namespace= or default. There is no header form.
func requestNamespace(r *http.Request) string {
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		return ns
	}
	return "default"
}
