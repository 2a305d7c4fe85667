package replica

import (
	"net/http"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

// A blob of more chunks than a reference may name gets a level of index
// chunks, and reads back whole.
func TestLongBlobsGetIndexChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, mem := nomadtest.New(nomadtest.Options{}), nomadtest.NewMemNet()
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(mem.Listener()) }()
		t.Cleanup(func() { _ = srv.Close(); mem.Close(); _ = hs.Close() })
		c, err := api.NewClient(&api.Config{Address: mem.URL(), HttpClient: mem.HTTPClient()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(Config{Client: c, Namespace: "default", Prefix: "p", Store: struct{ Store }{}})
		if err != nil {
			t.Fatal(err)
		}
		// Equal chunks but the last, so that the test writes few.
		data := strings.Repeat("a", (maxRefChunks+1)*maxChunkBytes) + "end"
		chunks := map[string]string{}
		ref, err := split(data, chunks)
		if err != nil {
			t.Fatal(err)
		}
		if ref.Depth != 1 || len(ref.Chunks) != 1 {
			t.Fatalf("reference of %d chunks: depth %d naming %d, want depth 1 naming 1 index chunk", maxRefChunks+2, ref.Depth, len(ref.Chunks))
		}
		if err := r.writeChunks(t.Context(), chunks); err != nil {
			t.Fatal(err)
		}
		refs := map[string]bool{}
		got, err := r.newChunkReader().blob(t.Context(), ref, refs)
		if err != nil {
			t.Fatal(err)
		}
		if got != data {
			t.Errorf("read back %d bytes, not the %d written", len(got), len(data))
		}
		if len(refs) != len(chunks) {
			t.Errorf("reading named %d chunks, want the %d written", len(refs), len(chunks))
		}
	})
}
