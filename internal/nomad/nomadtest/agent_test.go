package nomadtest

import (
	"strings"
	"testing"
)

// TestNodeHTTPAddr: the node advertises the server's own address once it
// listens, so nomad/api's direct connection to the node reaches it, and
// none when served over a listener it does not own.
func TestNodeHTTPAddr(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	node, _, err := f.api.Nodes().Info(f.srv.nodeID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(f.srv.URL(), "http://"); node.HTTPAddr != want {
		t.Errorf("HTTPAddr %q, want %q", node.HTTPAddr, want)
	}
	if addr := New(Options{}).nodeFull()["HTTPAddr"]; addr != "" {
		t.Errorf("unstarted server: HTTPAddr %q, want none", addr)
	}
}
