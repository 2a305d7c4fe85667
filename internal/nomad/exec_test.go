package nomad

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// The agent answers file-system errors in three shapes: 200 with the
// error as text (cat, recorded), and an error status whose body is the
// same text (stat and ls of a missing path). Each must come out as the
// file-system condition, never as content, an unknown allocation or a
// failing agent; an unknown allocation stays ErrNotFound.
func TestFileSystemErrorsAreSortedWhateverTheirStatus(t *testing.T) {
	const alloc = "8d1471a7-d0b5-4b2d-24b8-6acaa426f36e"
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"missing as 200 text", 200, "stat /var/lib/nomad/alloc/" + alloc + "/sandbox/local/nope.txt: no such file or directory", ErrNoSuchFile},
		{"missing as 404", 404, "stat /var/lib/nomad/alloc/" + alloc + "/sandbox/local/nope.txt: no such file or directory", ErrNoSuchFile},
		{"missing as 500", 500, "rpc error: stat /x: no such file or directory", ErrNoSuchFile},
		{"escape as 200 text", 200, "Path escapes the alloc directory", ErrPathEscapes},
		{"escape as 500", 500, "Path escapes the alloc directory", ErrPathEscapes},
		{"directory as 200 text", 200, `file "/sandbox/local" is a directory`, ErrIsDirectory},
		{"unknown allocation", 404, `Unknown allocation "` + alloc + `"`, ErrNotFound},
		{"agent failing", 500, "rpc error: EOF", ErrTransient},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body + "\n"))
			}))
			defer srv.Close()
			c, err := NewClient(Config{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			a := &api.Allocation{ID: alloc, Namespace: "default"}
			if _, err := c.Stat(t.Context(), a, "/sandbox/local/nope.txt"); !errors.Is(err, tc.want) {
				t.Errorf("stat: %v, want %v", err, tc.want)
			}
			if _, err := c.List(t.Context(), a, "/sandbox/local"); !errors.Is(err, tc.want) {
				t.Errorf("list: %v, want %v", err, tc.want)
			}
			if tc.status != http.StatusOK {
				if _, err := c.Cat(t.Context(), a, "/sandbox/local/nope.txt"); !errors.Is(err, tc.want) {
					t.Errorf("cat: %v, want %v", err, tc.want)
				}
			}
		})
	}
}
