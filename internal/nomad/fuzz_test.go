package nomad

import (
	"bytes"
	"context"
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
			if bytes.Equal(bytes.TrimSpace(d.raw), []byte("{}")) {
				continue
			}
			_ = w.handleLine(d.raw, 5, first, sink)
		}
		for _, k := range sink.keys {
			ns, name, ok := strings.Cut(k, "/")
			if !ok || ns == "" || name == "" {
				t.Fatalf("malformed key %q from %q", k, data)
			}
		}
	})
}
