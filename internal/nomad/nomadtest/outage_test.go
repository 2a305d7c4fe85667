package nomadtest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStopListeningEndsStreamsOpenedWhileStopping has clients that reopen
// their event stream the moment it is cut, as a watcher does, so that
// some of them are mid-handshake while StopListening runs. A crashed agent
// leaves no connection behind: every stream must end, and none may start
// until Resume.
func TestStopListeningEndsStreamsOpenedWhileStopping(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	addr := strings.TrimPrefix(f.srv.URL(), "http://")
	for round := range 30 {
		var clients sync.WaitGroup
		survived := make(chan error, 8)
		opened := make(chan struct{}, 8)
		for range 8 {
			clients.Go(func() {
				for first := true; ; first = false {
					err := followStream(addr, opened, first)
					if errors.Is(err, errRefused) {
						return
					}
					if err != nil {
						survived <- err
						return
					}
				}
			})
		}
		for range 8 {
			<-opened
		}
		f.srv.StopListening()
		clients.Wait()
		close(survived)
		for err := range survived {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := f.srv.Resume(); err != nil {
			t.Fatal(err)
		}
	}
}

var errRefused = errors.New("refused")

// followStream opens one stream and reads it until it ends. An open that
// fails is errRefused; a stream still open 5 s after the stop began is an
// error (the deadline only keeps a broken server from hanging the test).
func followStream(addr string, opened chan<- struct{}, first bool) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return errRefused
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /v1/event/stream HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		return errRefused
	}
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		return errRefused // cut before the status line
	}
	if first {
		opened <- struct{}{}
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := r.ReadString('\n'); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errors.New("an event stream outlived StopListening")
			}
			return nil
		}
	}
}
