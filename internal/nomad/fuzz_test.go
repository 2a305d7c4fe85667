package nomad

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

type keySink struct{ keys []string }

func (k *keySink) Changed(key string) { k.keys = append(k.keys, key) }
func (k *keySink) Relisted(Listing)   {}

// FuzzEventStream feeds arbitrary bytes through the event-stream reader
// as a connection would deliver them. It must never panic, and every key
// it reports must be a well-formed namespace/name.
func FuzzEventStream(f *testing.F) {
	for _, seed := range []string{
		"{}\n",
		"{}\n{\"Index\":26,\"Events\":[{\"Topic\":\"Job\",\"Type\":\"JobRegistered\",\"Key\":\"agentkernel-x\",\"Namespace\":\"default\",\"FilterKeys\":null,\"Index\":26,\"Payload\":{\"Job\":{}}}]}\n",
		"{\"Index\":27,\"Events\":[{\"Topic\":\"Allocation\",\"Type\":\"AllocationUpdated\",\"Key\":\"a1\",\"Namespace\":\"team\",\"FilterKeys\":[\"agentkernel-y\",\"\"],\"Index\":27}]}\n",
		"{\"Index\":0}\n", "not json\n", "{\"Index\":3,\"Events\":[{\"Key\":\"agentkernel-\"}]}", "{\"Error\":\"boom\"}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &Watcher{opts: WatchOptions{}.withDefaults()}
		sink := &keySink{}
		lines := make(chan decoded)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go decodeLines(ctx, bytes.NewReader(data), lines)
		for first := true; ; first = false {
			d := <-lines
			if d.err != nil {
				break
			}
			if d.line.heartbeat() {
				continue
			}
			_ = w.handleLine(&d.line, 5, first, sink)
		}
		for _, k := range sink.keys {
			ns, name, ok := strings.Cut(k, "/")
			if !ok || ns == "" || name == "" {
				t.Fatalf("malformed key %q from %q", k, data)
			}
		}
	})
}

// An event whose line has a field of a type the watcher does not expect
// is not trusted to the cache, not even for which sandbox it is about:
// the sandbox it names is looked at again (the reconcile reads Nomad),
// and the connection ends past the line, so that the relist of the
// reconnection covers whatever else it said.
func TestAnEventThatDoesNotDecodeIsLookedAtAndRelisted(t *testing.T) {
	for _, tt := range []struct {
		name, line string
		want       []string
	}{
		{"a payload field", `{"Index":30,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Namespace":"default","FilterKeys":["agentkernel-x",""],"Index":30,"Payload":{"Allocation":{"ID":"a1","JobID":"agentkernel-x","ClientStatus":5}}}]}`,
			[]string{"default/x"}},
		{"the field that names the job", `{"Index":30,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Namespace":"default","FilterKeys":"agentkernel-x","Index":30,"Payload":{"Allocation":{"ID":"a1","JobID":"agentkernel-x"}}}]}`,
			nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCache("owner-1")
			c.replace(Listing{Index: 20})
			w := &Watcher{opts: WatchOptions{Cache: c}.withDefaults()}
			sink := &keySink{}
			lines := make(chan decoded, 2)
			decodeLines(t.Context(), strings.NewReader(tt.line+"\n"), lines)
			d := <-lines
			if d.err != nil || d.line.heartbeat() {
				t.Fatalf("decoded %+v, %v; want a line to handle", d.line, d.err)
			}
			if err := w.handleLine(&d.line, 30, false, sink); !errors.Is(err, ErrTransient) {
				t.Errorf("handleLine: %v, want a transient error that ends the connection", err)
			}
			if !slices.Equal(sink.keys, tt.want) {
				t.Errorf("sandboxes looked at: %v, want %v", sink.keys, tt.want)
			}
			if w.last != 30 {
				t.Errorf("stream resumes after index %d, want 30: past the line", w.last)
			}
			if j, ok := c.Get("default/x"); ok && tt.want != nil {
				t.Errorf("the undecodable event's sandbox still answered from the cache: %+v", j)
			}
		})
	}
	// A line that is not an object is no heartbeat.
	lines := make(chan decoded, 2)
	decodeLines(t.Context(), strings.NewReader("[1,2]\n"), lines)
	if d := <-lines; d.err == nil && d.line.heartbeat() {
		t.Error("[1,2] taken for a heartbeat")
	}
}
