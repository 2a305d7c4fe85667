package nomad

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
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

// An event whose payload has a field of a type the watcher does not
// expect is not trusted to the cache: its sandbox is looked at again
// (the reconcile reads Nomad), and the stream goes on with the next line.
func TestAnEventThatDoesNotDecodeIsLookedAtAndTheStreamGoesOn(t *testing.T) {
	stream := `{"Index":30,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Namespace":"default","FilterKeys":["agentkernel-x",""],"Index":30,"Payload":{"Allocation":{"ID":"a1","JobID":"agentkernel-x","ClientStatus":5}}}]}
{}
{"Index":31,"Events":[{"Topic":"Job","Type":"JobDeregistered","Key":"agentkernel-y","Namespace":"default","Index":31,"Payload":{"Job":{"ID":"agentkernel-y","Namespace":"default","JobModifyIndex":12,"ModifyIndex":12}}}]}
`
	c := NewCache("owner-1")
	c.replace(Listing{Index: 20, Jobs: []*api.JobListStub{{Namespace: "default", ID: "agentkernel-y", JobModifyIndex: 12, ModifyIndex: 12,
		Meta: map[string]string{MetaOwner: "owner-1"}}}})
	w := &Watcher{opts: WatchOptions{Cache: c}.withDefaults()}
	sink := &keySink{}
	lines := make(chan decoded)
	go decodeLines(t.Context(), strings.NewReader(stream), lines)
	for d := <-lines; d.err == nil; d = <-lines {
		if d.line.heartbeat() {
			continue
		}
		if err := w.handleLine(&d.line, 30, false, sink); err != nil {
			t.Fatalf("line at %v: %v", d.line.Index, err)
		}
	}
	if want := []string{"default/x", "default/y"}; !slices.Equal(sink.keys, want) {
		t.Errorf("sandboxes looked at: %v, want %v", sink.keys, want)
	}
	if j, ok := c.Get("default/y"); !ok || j != nil {
		t.Errorf("the purge after the undecodable line not applied to the cache: %+v, %t", j, ok)
	}
	if j, ok := c.Get("default/x"); ok {
		t.Errorf("the undecodable event's sandbox still answered from the cache: %+v", j)
	}
}
