package nomadtest

import (
	"compress/gzip"
	"net/http"
	"strings"
	"sync"
)

// gzipWriter compresses a response for clients that accept gzip, as the
// agent does for every response, whatever its size (facts 4.13, more/ 2.1).
// The api client asks for gzip on every request.
type gzipWriter struct {
	http.ResponseWriter
	pool    *sync.Pool
	gz      *gzip.Writer
	started bool
	plain   bool // no body allowed: pass through
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if enc, _, _ := strings.Cut(strings.TrimSpace(part), ";"); enc == "gzip" {
			return true
		}
	}
	return false
}

func (g *gzipWriter) WriteHeader(status int) {
	if g.started {
		return
	}
	g.started = true
	if status == http.StatusNoContent || status == http.StatusNotModified || status < 200 {
		g.plain = true
		g.ResponseWriter.WriteHeader(status)
		return
	}
	h := g.Header()
	h.Del("Content-Length")
	// With Content-Encoding set, net/http no longer sniffs a missing
	// Content-Type, which is why a gzipped 409 has none (more/ 242).
	h.Set("Content-Encoding", "gzip")
	if gz, ok := g.pool.Get().(*gzip.Writer); ok {
		gz.Reset(g.ResponseWriter)
		g.gz = gz
	} else {
		// A gzip writer costs about 800KB to set up: reuse them.
		g.gz, _ = gzip.NewWriterLevel(g.ResponseWriter, gzip.BestSpeed)
	}
	g.ResponseWriter.WriteHeader(status)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if !g.started {
		g.WriteHeader(http.StatusOK)
	}
	if g.plain {
		return g.ResponseWriter.Write(b)
	}
	return g.gz.Write(b)
}

// Flush sends what is compressed so far, for long responses.
func (g *gzipWriter) Flush() {
	if g.gz != nil {
		_ = g.gz.Flush()
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *gzipWriter) close() {
	if g.gz != nil {
		_ = g.gz.Close()
		g.pool.Put(g.gz)
		g.gz = nil
	}
}
