package nomad

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// timeoutTransport bounds each request by what it is: a plain request by
// the timeout; a blocking query by its wait, Nomad's jitter of up to a
// sixteenth of it, and the timeout; a stream (the event stream, a log
// followed) not at all, since it has a heartbeat to tell silence from a
// dead peer. The bound covers reading the body too.
type timeoutTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

// defaultBlockingWait is Nomad's wait for a blocking query that names
// none.
const defaultBlockingWait = 5 * time.Minute

func (t *timeoutTransport) bound(r *http.Request) time.Duration {
	q := r.URL.Query()
	switch {
	case strings.HasSuffix(r.URL.Path, "/event/stream"), q.Get("follow") == "true",
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return 0
	case strings.HasPrefix(r.URL.Path, "/v1/client/fs/cat/"), strings.HasPrefix(r.URL.Path, "/v1/client/fs/logs/"):
		// A file or a log can be large; the caller's context bounds
		// reading it, as the client who asked for it goes away.
		return 0
	case q.Get("index") != "" && q.Get("index") != "0":
		wait := defaultBlockingWait
		if w, err := time.ParseDuration(q.Get("wait")); err == nil && w > 0 {
			wait = w
		}
		return wait + wait/16 + t.timeout
	}
	return t.timeout
}

func (t *timeoutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	d := t.bound(r)
	if d <= 0 {
		return t.base.RoundTrip(r)
	}
	parent := r.Context()
	ctx, cancel := context.WithTimeout(parent, d)
	resp, err := t.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		timedOut := ctx.Err() != nil && parent.Err() == nil
		cancel()
		if timedOut {
			return nil, &RequestTimeoutError{Method: r.Method, Path: r.URL.Path, After: d}
		}
		return nil, err
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, ctx: ctx, parent: parent, cancel: cancel,
		timeout: &RequestTimeoutError{Method: r.Method, Path: r.URL.Path, After: d}}
	return resp, nil
}

// boundedBody ends the request's time bound when the body is closed, and
// reports a read cut by it as the timeout it is.
type boundedBody struct {
	io.ReadCloser
	ctx, parent context.Context
	cancel      context.CancelFunc
	timeout     error
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil && b.parent.Err() == nil {
		err = b.timeout
	}
	return n, err
}

func (b *boundedBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// RequestTimeoutError is a request Nomad did not answer in time. It is a
// net.Error with Timeout true, so it is classified as transient, unlike
// the caller's own deadline, which is the caller's decision.
type RequestTimeoutError struct {
	Method, Path string
	After        time.Duration
}

func (e *RequestTimeoutError) Error() string {
	return fmt.Sprintf("%s %s: no answer from Nomad within %s", e.Method, e.Path, e.After)
}

// Timeout and Temporary make it a net.Error.
func (e *RequestTimeoutError) Timeout() bool   { return true }
func (e *RequestTimeoutError) Temporary() bool { return true }
