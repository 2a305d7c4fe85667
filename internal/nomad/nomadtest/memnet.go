package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// MemNet is an in-memory network for tests that run the server, the
// client and the code under test inside one testing/synctest bubble:
// connections are net.Pipe pairs, so a blocked read is durably blocked
// and fake time can advance, which real sockets do not allow.
//
//	mn := nomadtest.NewMemNet()
//	go http.Serve(mn.Listener(), srv)   // or (&http.Server{Handler: srv}).Serve(mn.Listener())
//	client := mn.HTTPClient()           // for nomad.Config.HTTPClient
//
// SetDown makes new connections fail with "connection refused" and cuts
// open ones, as a Nomad outage does.
type MemNet struct {
	mu     sync.Mutex
	down   bool
	silent bool
	closed bool
	conns  map[net.Conn]struct{}
	accept chan net.Conn
	done   chan struct{}
}

// NewMemNet makes an in-memory network with one listening address.
func NewMemNet() *MemNet {
	return &MemNet{conns: map[net.Conn]struct{}{}, accept: make(chan net.Conn), done: make(chan struct{})}
}

// Addr is the fake address clients use: http://nomad.mem:4646.
const memAddr = "nomad.mem:4646"

// URL is the address to give the client.
func (m *MemNet) URL() string { return "http://" + memAddr }

// Dial connects to the listener.
func (m *MemNet) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	m.mu.Lock()
	if m.down || m.closed {
		m.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("memnet: %w", syscall.ECONNREFUSED)}
	}
	client, server := net.Pipe()
	m.conns[client] = struct{}{}
	m.conns[server] = struct{}{}
	if m.silent {
		// Nobody serves the other end: the request is never read, as
		// with a host that vanished without a reset.
		m.mu.Unlock()
		return client, nil
	}
	m.mu.Unlock()
	select {
	case m.accept <- server:
		return client, nil
	case <-m.done:
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("memnet: %w", syscall.ECONNREFUSED)}
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

// HTTPClient is a client whose every connection goes through the memnet.
func (m *MemNet) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: m.Dial, DisableKeepAlives: true}}
}

// SetDown refuses new connections and cuts the open ones while down is
// true.
func (m *MemNet) SetDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
	if down {
		for c := range m.conns {
			c.Close()
		}
		clear(m.conns)
	}
}

// SetSilent makes Nomad vanish without a reset while silent is true:
// new connections open but nothing ever reads or answers them (the
// memnet's client keeps no connection alive, so every request is new).
// Only a client's own time bound ends such a request.
func (m *MemNet) SetSilent(silent bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.silent = silent
}

// Close ends the listener and every connection.
func (m *MemNet) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	close(m.done)
	for c := range m.conns {
		c.Close()
	}
	clear(m.conns)
}

// Listener is the server side.
func (m *MemNet) Listener() net.Listener { return memListener{m} }

type memListener struct{ m *MemNet }

func (l memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.accept:
		return c, nil
	case <-l.m.done:
		return nil, errors.New("memnet: listener closed")
	}
}

func (l memListener) Close() error   { l.m.Close(); return nil }
func (l memListener) Addr() net.Addr { return memNetAddr{} }

type memNetAddr struct{}

func (memNetAddr) Network() string { return "mem" }
func (memNetAddr) String() string  { return memAddr }
