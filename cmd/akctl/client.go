package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

// Connection defaults.
const (
	defaultAddr    = "http://127.0.0.1:7474"
	defaultTimeout = 30 * time.Second
)

// globalFlags say how to reach the controller. They are accepted before
// the command and after it; flags beat the environment, which beats the
// defaults.
type globalFlags struct {
	addr, token, tokenFile string
	// requestTimeout bounds each request; timeout, when set, a wait as a
	// whole (wait, apply --wait, delete --wait), as kubectl's do.
	requestTimeout time.Duration
	timeout        time.Duration
	timeoutSet     bool
	verbose        bool
	// stale lets any instance answer reads from its own copy.
	stale bool
}

func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "controller `URL`: http(s)://host:port or unix:///path/controller.sock (env AKCTL_ADDR; default "+defaultAddr+")")
	fs.StringVar(&g.token, "token", g.token, "API `token` (env AKCTL_TOKEN)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "read the API token from `file`")
	fs.Func("timeout", "give up waiting after `duration`: wait, apply --wait, delete --wait (default 5m)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 2m")
		}
		g.timeout, g.timeoutSet = d, true
		return nil
	})
	fs.Func("request-timeout", "bound on each request, as `duration` (default 30s)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 30s")
		}
		g.requestTimeout = d
		return nil
	})
	fs.BoolVar(&g.verbose, "v", g.verbose, "log every request to standard error")
	fs.BoolVar(&g.stale, "stale", g.stale, "let any controller instance answer reads from its own copy, which may lag the leader's")
}

// client talks to the controller's API.
type client struct {
	// addr is the address as the user gave it, for messages.
	addr    string
	base    string
	http    *http.Client
	token   string
	timeout time.Duration
	log     io.Writer // nil unless -v
	// stale adds stale=true to reads (--stale).
	stale bool
	// staleFrom is the first answer that came from a follower's own copy,
	// for the note get and describe print.
	staleFrom *servedBy
}

// servedBy is what an answer says of the controller instance that
// produced it.
type servedBy struct {
	instance string
	// lastSync is when that instance's copy last matched the leader's:
	// RFC 3339, "never", or empty when it did not say.
	lastSync string
}

func newClient(e *env) (*client, error) {
	g := &e.globals
	addr := g.addr
	if addr == "" {
		addr = e.getenv("AKCTL_ADDR")
	}
	if addr == "" {
		addr = defaultAddr
	}
	token := g.token
	if token == "" && g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("token file %s is empty", g.tokenFile)
		}
	}
	if token == "" {
		token = e.getenv("AKCTL_TOKEN")
	}
	c := &client{addr: addr, token: token, timeout: g.requestTimeout, stale: g.stale}
	if c.timeout == 0 {
		c.timeout = defaultTimeout
	}
	if g.verbose {
		c.log = e.stderr
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	switch {
	case strings.HasPrefix(addr, "unix://"), strings.HasPrefix(addr, "/"):
		path := strings.TrimPrefix(addr, "unix://")
		if path == "" {
			return nil, usagef("--addr %q names no socket path", addr)
		}
		var d net.Dialer
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://controller"
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return nil, usagef("--addr %q is not a URL: want http://host:port or unix:///path", addr)
		}
		c.base = strings.TrimSuffix(addr, "/")
	default:
		return nil, usagef("--addr %q: want http://host:port, https://host:port or unix:///path/controller.sock", addr)
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// close drops idle connections so that tests and long sessions leave no
// sockets behind.
func (c *client) close() { c.http.CloseIdleConnections() }

// apiError is an error answer from the controller.
type apiError struct {
	status int
	body   api.ErrorBody
	// tokenSent tells a missing token from a wrong one on 401.
	tokenSent bool
}

func (e *apiError) Error() string {
	d := e.body.Error
	var b strings.Builder
	switch e.status {
	case http.StatusUnauthorized:
		if e.tokenSent {
			return "the controller refused the token: check --token, --token-file or AKCTL_TOKEN"
		}
		return "the controller requires a token: set --token-file or AKCTL_TOKEN"
	case http.StatusBadRequest:
		b.WriteString("invalid: " + d.Message)
	case http.StatusConflict:
		b.WriteString("conflict: " + d.Message)
	case http.StatusUnprocessableEntity:
		b.WriteString("refused: " + d.Message)
	default:
		if d.Message == "" {
			return fmt.Sprintf("the controller answered %d %s", e.status, http.StatusText(e.status))
		}
		b.WriteString(d.Message)
	}
	for _, line := range detailLines(d.Details) {
		b.WriteString("\n  " + line)
	}
	if e.status == http.StatusConflict {
		b.WriteString("\nre-run apply; someone changed these sandboxes since you read them")
	}
	return b.String()
}

// detailLines renders an error's details: per-object problems as
// "file:line: sandbox ns/name: problem", strings as they are.
func detailLines(details []any) []string {
	var out []string
	for _, d := range details {
		raw, err := json.Marshal(d)
		if err != nil {
			continue
		}
		var op api.ObjectProblems
		if json.Unmarshal(raw, &op) == nil && op.Problems != nil {
			where := ""
			if op.Source != "" {
				where = op.Source + ": "
			}
			for _, p := range op.Problems {
				out = append(out, fmt.Sprintf("%ssandbox %s/%s: %s", where, op.Namespace, op.Name, p))
			}
			continue
		}
		if s, ok := d.(string); ok {
			out = append(out, s)
			continue
		}
		out = append(out, string(raw))
	}
	return out
}

func isStatus(err error, status int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == status
}

// unreachableError is a controller that did not answer at all.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the controller at %s: is it running? (controller -dev starts one)", e.addr)
}

func (e *unreachableError) Unwrap() error { return e.err }

func (c *client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	if c.stale && method == http.MethodGet && isRead(path) {
		path = withStale(path)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "akctl/"+version)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send performs a request and returns the response when it succeeded
// (2xx); any other answer is decoded into an *apiError.
func (c *client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if c.log != nil {
			fmt.Fprintf(c.log, "akctl: %s %s: %v\n", req.Method, req.URL.RequestURI(), err)
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, &unreachableError{addr: c.addr, err: err}
		}
		if req.Context().Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, req.Context().Err())
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if c.log != nil {
		fmt.Fprintf(c.log, "akctl: %s %s -> %d\n", req.Method, req.URL.RequestURI(), resp.StatusCode)
	}
	if resp.StatusCode/100 == 2 {
		if resp.Header.Get(api.HeaderStale) == "true" && c.staleFrom == nil {
			c.staleFrom = &servedBy{instance: resp.Header.Get(api.HeaderServedBy), lastSync: resp.Header.Get(api.HeaderLastSync)}
		}
		return resp, nil
	}
	defer resp.Body.Close()
	ae := &apiError{status: resp.StatusCode, tokenSent: c.token != ""}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &ae.body) != nil || ae.body.Error.Code == "" {
		// Every error the controller sends is {"error": {"code", ...}}.
		return nil, &notControllerError{addr: c.addr, status: resp.Status, body: b}
	}
	return nil, ae
}

// notControllerError is an answer no controller gives: --addr names
// something else (a Nomad agent's port, a proxy's error page).
type notControllerError struct {
	addr, status string
	body         []byte
}

func (e *notControllerError) Error() string {
	snippet := strings.TrimSpace(string(e.body))
	if len(snippet) > 80 {
		snippet = snippet[:80] + "…"
	}
	msg := fmt.Sprintf("%s does not answer as an agentkernel controller (it said %s", e.addr, e.status)
	if snippet != "" {
		msg += fmt.Sprintf(": %q", snippet)
	}
	return msg + "); check --addr or AKCTL_ADDR: the controller listens on " + defaultAddr + " unless told otherwise, Nomad on :4646"
}

// do sends one request bounded by the client's timeout and decodes the
// JSON answer into out (when not nil).
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.newRequest(rctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("the controller at %s did not answer %s %s within %s (--request-timeout)", c.addr, method, req.URL.Path, c.timeout)
		}
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read the answer to %s %s: %w", method, path, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &notControllerError{addr: c.addr, status: resp.Status, body: b}
	}
	return nil
}

// watch opens GET /v1/watch; lines are delivered until the stream ends,
// ctx is done or fn returns false. It is not bounded by the timeout.
func (c *client) watch(ctx context.Context, q url.Values, fn func(api.WatchLine) bool) error {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/watch?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line api.WatchLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("read watch stream: %w", err)
		}
		switch line.Type {
		case "heartbeat":
			continue
		case "error":
			we := &watchEndedError{}
			if line.Error != nil {
				we.detail = *line.Error
			}
			return we
		}
		if !fn(line) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read watch stream: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("the controller ended the watch")
}

// watchEndedError is the error line a watch stream ended with.
type watchEndedError struct{ detail api.ErrorDetail }

func (e *watchEndedError) Error() string {
	if e.detail.Message == "" {
		return "the controller ended the watch"
	}
	return "the controller ended the watch: " + e.detail.Message
}

// mustListAgain tells the watch failures that ask the client to list
// again and watch from the new list: the stream fell behind the change
// feed, or its revision is not one of the store that would serve it.
func mustListAgain(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status == http.StatusGone
	}
	var we *watchEndedError
	if errors.As(err, &we) {
		return we.detail.Code == api.CodeCompacted || we.detail.Code == api.CodeUnknownRevision
	}
	return false
}

// isRead tells the requests that read sandboxes, which a follower
// forwards to the leader unless they say stale=true. Diff is left out on
// purpose: it previews what apply, which only the leader takes, would do.
func isRead(path string) bool {
	return strings.HasPrefix(path, "/v1/sandboxes") || strings.HasPrefix(path, "/v1/watch")
}

func withStale(path string) string {
	switch {
	case strings.HasSuffix(path, "?"):
		return path + "stale=true"
	case strings.Contains(path, "?"):
		return path + "&stale=true"
	}
	return path + "?stale=true"
}

// noteStale says on standard error, once, that an answer came from a
// follower's own copy rather than from the leader.
func (c *client) noteStale(e *env) {
	sf := c.staleFrom
	if sf == nil {
		return
	}
	c.staleFrom = nil
	who := "a follower"
	if sf.instance != "" {
		who = "follower " + sf.instance
	}
	synced := ""
	if sf.lastSync == "never" {
		synced = " (never synced)"
	} else if t, err := time.Parse(time.RFC3339Nano, sf.lastSync); err == nil {
		synced = " (last synced " + age(t, e.clock()) + " ago)"
	}
	fmt.Fprintf(e.stderr, "note: served by %s%s; status may lag the leader's\n", who, synced)
}

func sandboxPath(namespace, name string) string {
	return "/v1/sandboxes/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}

func (c *client) get(ctx context.Context, namespace, name string) (api.Item, error) {
	var it api.Item
	err := c.do(ctx, http.MethodGet, sandboxPath(namespace, name), nil, &it)
	return it, err
}

func listQuery(namespace, selector string) url.Values {
	q := url.Values{}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	if selector != "" {
		q.Set("selector", selector)
	}
	return q
}

func (c *client) list(ctx context.Context, namespace, selector string) (api.ItemList, error) {
	q := listQuery(namespace, selector)
	path := "/v1/sandboxes"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l api.ItemList
	err := c.do(ctx, http.MethodGet, path, nil, &l)
	return l, err
}

// waitTimeout bounds a wait: --timeout, or 5 minutes.
func (g *globalFlags) waitTimeout() time.Duration {
	if g.timeoutSet {
		return g.timeout
	}
	return 5 * time.Minute
}

// registerTimeoutWait keeps --timeout-wait, the earlier spelling of
// --timeout on apply and delete, working for the scripts that use it.
func (g *globalFlags) registerTimeoutWait(fs *flag.FlagSet) {
	fs.Func("timeout-wait", "deprecated: the same as --timeout", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 2m")
		}
		g.timeout, g.timeoutSet = d, true
		return nil
	})
}
