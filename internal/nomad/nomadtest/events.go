package nomadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// event is one entry of an event-stream line (facts 4.10). Fields are in the
// order the recorded agent wrote them.
type event struct {
	FilterKeys []string
	Index      uint64
	Key        string
	Namespace  string
	Payload    json.RawMessage
	Topic      string
	Type       string
	// wire is the event encoded, once, when it is published: every
	// stream that sends it writes these bytes rather than encoding (and
	// validating) the payload again.
	wire []byte
}

// line is one NDJSON line: the events of one write. A write can produce
// two lines with the same index (more/ 6), so the buffer counts lines.
type line struct {
	seq    uint64
	index  uint64
	events []event
}

// eventBuffer is the bounded ring resuming streams read from. Streams that
// ask for an index older than the ring start at its oldest line without a
// gap marker (facts 4.10, measurement E).
type eventBuffer struct {
	size    int
	lines   []line
	nextSeq uint64
	notify  chan struct{}
}

func (b *eventBuffer) changed() <-chan struct{} {
	if b.notify == nil {
		b.notify = make(chan struct{})
	}
	return b.notify
}

// publish appends one line. Callers hold s.mu.
func (s *Server) publish(idx uint64, evs ...event) {
	if len(evs) == 0 {
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		for _, e := range evs {
			s.log.Debug("state change", "index", idx, "topic", e.Topic, "type", e.Type, "key", e.Key)
		}
	}
	for i := range evs {
		evs[i].wire = mustJSON(evs[i])
	}
	b := &s.events
	b.lines = append(b.lines, line{seq: b.nextSeq, index: idx, events: evs})
	b.nextSeq++
	if over := len(b.lines) - b.size; over > 0 {
		b.lines = append(b.lines[:0:0], b.lines[over:]...)
	}
	if b.notify != nil {
		close(b.notify)
		b.notify = nil
	}
}

// startSeq is where a stream asking for ?index=n begins: the whole buffer for
// 0 (47), the first line at or after n (42), the oldest line when n left the
// buffer (43), the newest line when n is in the future (44).
func (b *eventBuffer) startSeq(n uint64) uint64 {
	if len(b.lines) == 0 {
		return b.nextSeq
	}
	if n == 0 {
		return b.lines[0].seq
	}
	for _, l := range b.lines {
		if l.index >= n {
			return l.seq
		}
	}
	return b.lines[len(b.lines)-1].seq
}

func (s *Server) jobEvent(idx uint64, j *api.Job, typ string) event {
	// The agent's job has no job-level Migrate or Reschedule; api.Job
	// does, and leaves them null.
	var m map[string]json.RawMessage
	if err := json.Unmarshal(mustJSON(j), &m); err != nil {
		panic(fmt.Sprintf("decode job: %v", err))
	}
	for _, k := range []string{"Migrate", "Reschedule"} {
		if string(m[k]) == "null" {
			delete(m, k)
		}
	}
	return event{
		Topic:     "Job",
		Type:      typ,
		Key:       deref(j.ID),
		Namespace: deref(j.Namespace),
		Index:     idx,
		Payload:   mustJSON(map[string]any{"Job": m}),
	}
}

// evalEvent carries the evaluation without its zero-valued top-level
// fields, as recorded (lifecycle events: JobModifyIndex, DeploymentID,
// PlanAnnotations and the like appear only once set).
func (s *Server) evalEvent(idx uint64, ee *evalEntry, typ string) event {
	return event{
		Topic:      "Evaluation",
		Type:       typ,
		Key:        ee.e.ID,
		Namespace:  ee.e.Namespace,
		FilterKeys: []string{ee.e.JobID, ee.e.DeploymentID},
		Index:      idx,
		Payload:    mustJSON(map[string]any{"Evaluation": omitZero(mustJSON(ee.e))}),
	}
}

// allocWire is an allocation as the agent encodes it: the api struct and
// the fields only the server's struct has.
type allocWire struct {
	*api.Allocation
	AllocatedResources *allocatedResources `json:",omitempty"`
	SharedResources    *api.Resources      `json:",omitempty"`
	SigningKeyID       string              `json:",omitempty"`
}

// allocatedResources adds the tasks' lifecycles, null for main tasks.
type allocatedResources struct {
	*api.AllocatedResources
	TaskLifecycles map[string]*api.TaskLifecycle
}

func (s *Server) allocWire(a *alloc, c *api.Allocation) allocWire {
	w := allocWire{Allocation: c, SharedResources: a.shared, SigningKeyID: s.signingKeyID}
	if c.AllocatedResources != nil {
		w.AllocatedResources = &allocatedResources{AllocatedResources: c.AllocatedResources, TaskLifecycles: make(map[string]*api.TaskLifecycle)}
		for name := range c.AllocatedResources.Tasks {
			w.AllocatedResources.TaskLifecycles[name] = nil
		}
	}
	return w
}

// allocEvent carries the allocation without its Job and without zero-valued
// top-level fields, as recorded (facts 4.10; no JobVersion, more/ 6).
func (s *Server) allocEvent(idx uint64, a *alloc, typ string) event {
	c := *a.a
	c.Job = nil
	return event{
		Topic:      "Allocation",
		Type:       typ,
		Key:        a.a.ID,
		Namespace:  a.a.Namespace,
		FilterKeys: []string{a.a.JobID, a.a.DeploymentID},
		Index:      idx,
		Payload:    mustJSON(map[string]any{"Allocation": omitZero(mustJSON(s.allocWire(a, &c)))}),
	}
}

// deploymentEvent is filtered by the job alone (lifecycle events:
// FilterKeys [jobID]).
func (s *Server) deploymentEvent(idx uint64, d *deployment, typ string) event {
	return event{
		Topic:      "Deployment",
		Type:       typ,
		Key:        d.ID,
		Namespace:  d.Namespace,
		FilterKeys: []string{d.JobID},
		Index:      idx,
		Payload:    mustJSON(map[string]any{"Deployment": d}),
	}
}

// omitZero drops top-level keys whose value is null, false, 0, "", the
// zero time, or an object of nulls only (an unset DesiredTransition).
func omitZero(b []byte) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return b
	}
	for k, v := range m {
		switch string(v) {
		case "null", "false", "0", `""`, `"0001-01-01T00:00:00Z"`:
			delete(m, k)
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil || len(obj) == 0 {
			continue
		}
		allNull := true
		for _, x := range obj {
			allNull = allNull && string(x) == "null"
		}
		if allNull {
			delete(m, k)
		}
	}
	return mustJSON(m)
}

// streamFilter is the parsed topic and namespace selection of one stream.
type streamFilter struct {
	topics    map[string][]string
	namespace string
}

func parseStreamFilter(r *http.Request) streamFilter {
	q := r.URL.Query()
	f := streamFilter{topics: make(map[string][]string), namespace: q.Get("namespace")}
	if f.namespace == "" {
		f.namespace = "default"
	}
	for _, t := range q["topic"] {
		topic, key, ok := strings.Cut(t, ":")
		if !ok || key == "" {
			key = "*"
		}
		f.topics[topic] = append(f.topics[topic], key)
	}
	if len(q["topic"]) == 0 {
		f.topics["*"] = []string{"*"}
	}
	return f
}

// match applies topic=Topic:Key, where Key matches the event key or any
// filter key (45); an unknown topic simply matches nothing (46).
func (f streamFilter) match(e event) bool {
	// Node events belong to no namespace and reach every stream.
	if f.namespace != "*" && e.Namespace != f.namespace && e.Namespace != "" {
		return false
	}
	for _, k := range append(f.topics[e.Topic], f.topics["*"]...) {
		if k == "*" || k == e.Key {
			return true
		}
		for _, fk := range e.FilterKeys {
			if fk == k {
				return true
			}
		}
	}
	return false
}

// stream is one open event stream; closing cut ends it.
type stream struct {
	cut chan struct{}
}

// streamLine is the wire form of a line: the events one stream sees.
type streamLine struct {
	Events []event
	Index  uint64
}

// encode is the line as json.Marshal writes it, and a newline, built from
// the events' bytes encoded at publishing.
func (l streamLine) encode() []byte {
	n := 32
	for _, e := range l.Events {
		n += len(e.wire) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"Events":[`...)
	for i, e := range l.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.wire...)
	}
	b = append(b, `],"Index":`...)
	b = strconv.AppendUint(b, l.Index, 10)
	return append(b, "}\n"...)
}

// handleEventStream streams NDJSON like the agent: it takes over the
// connection and writes raw bytes with Connection: close and neither
// Content-Length nor chunked encoding, `{}` at once and then every
// HeartbeatInterval (facts 4.10). As a plain handler without a hijackable
// connection it streams through the ResponseWriter instead.
func (s *Server) handleEventStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	var index uint64
	if v := r.URL.Query().Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeText(w, http.StatusBadRequest, "Unable to parse index: "+err.Error())
			return
		}
		index = n
	}
	filter := parseStreamFilter(r)
	if !aclOf(r).allowStream(filter) {
		s.denyStream(w, r)
		return
	}

	out, flush, done, closeConn, ok := openStream(w)
	if !ok {
		return
	}
	defer closeConn()
	if done == nil {
		done = r.Context().Done()
	}

	var pos uint64
	st, remove, ok := s.addStream(func() { pos = s.events.startSeq(index) })
	if !ok {
		return
	}
	defer remove()

	if _, err := out.Write([]byte("{}\n")); err != nil {
		return
	}
	if flush() != nil {
		return
	}
	heartbeat := time.NewTicker(s.opts.HeartbeatInterval)
	defer heartbeat.Stop()
	for {
		s.mu.Lock()
		var batch []streamLine
		b := &s.events
		if len(b.lines) > 0 && pos < b.lines[0].seq {
			// The reader fell behind and its next line left the buffer:
			// Nomad ends such a subscription ("event dropped from
			// buffer", nomad/stream), and the stream with it.
			s.mu.Unlock()
			return
		}
		for _, l := range b.lines {
			if l.seq < pos {
				continue
			}
			pos = l.seq + 1
			var evs []event
			for _, e := range l.events {
				if filter.match(e) {
					evs = append(evs, e)
				}
			}
			if len(evs) > 0 {
				batch = append(batch, streamLine{Events: evs, Index: l.index})
			}
		}
		changed := b.changed()
		s.mu.Unlock()

		for _, l := range batch {
			if _, err := out.Write(l.encode()); err != nil {
				return
			}
		}
		if len(batch) > 0 && flush() != nil {
			return
		}
		select {
		case <-changed:
		case <-heartbeat.C:
			if _, err := out.Write([]byte("{}\n")); err != nil {
				return
			}
			if flush() != nil {
				return
			}
		case <-st.cut:
			return
		case <-done:
			return
		}
	}
}

// openStream writes the stream's status and headers and returns where to
// write lines.
func openStream(w http.ResponseWriter) (out *bufio.Writer, flush func() error, done <-chan struct{}, closeConn func(), ok bool) {
	const head = "HTTP/1.1 200 OK\r\nConnection: close\r\nCache-Control: no-cache\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\n\r\n"
	if hj, isHJ := w.(http.Hijacker); isHJ {
		conn, rw, err := hj.Hijack()
		if err == nil {
			if _, err := rw.WriteString(head); err != nil || rw.Flush() != nil {
				conn.Close()
				return nil, nil, nil, nil, false
			}
			d := make(chan struct{})
			go watchClose(conn, rw.Reader, d)
			return rw.Writer, rw.Writer.Flush, d, func() { conn.Close() }, true
		}
	}
	h := w.Header()
	h.Set("Connection", "close")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	rc := http.NewResponseController(w)
	fl := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	return bw, fl, nil, func() {}, true
}

// watchClose closes done when the client goes away.
func watchClose(conn net.Conn, r *bufio.Reader, done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 512)
	for {
		if _, err := r.Read(buf); err != nil {
			return
		}
	}
}

// addStream registers an open event stream, so that Close and
// CutEventStreams end it; locked, when set, runs under the server's lock
// as the stream is added. It returns the stream and its removal, or false
// once the server is closed.
func (s *Server) addStream(locked func()) (*stream, func(), bool) {
	st := &stream{cut: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, false
	}
	s.streams[st] = struct{}{}
	if locked != nil {
		locked()
	}
	return st, func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}, true
}
