package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultAddress is where a controller listens unless told otherwise.
const DefaultAddress = "http://127.0.0.1:7474"

// Config says how to reach a controller.
type Config struct {
	// Address is http://host:port, https://host:port or
	// unix:///path/controller.sock. Empty means $AKCTL_ADDR, then
	// DefaultAddress.
	Address string
	// Token is the API token. Empty means $AKCTL_TOKEN.
	Token string
	// HTTPClient, when set, sends the requests: give one with a TLS
	// configuration for a controller with a private CA or client
	// certificates. When its Transport is an *http.Transport, ExecStream
	// uses the same TLS settings and proxy, and a unix:// address dials
	// the socket through a copy of it. Requests are bounded by their
	// contexts: its Timeout is not used, since it would cut watches,
	// followed logs and long transfers.
	HTTPClient *http.Client
	// UserAgent names the program in the controller's logs.
	UserAgent string
}

// Client talks to one controller. It is safe for concurrent use.
type Client struct {
	addr      string // as configured, for messages
	base      string // URL prefix of every request
	http      *http.Client
	token     string
	userAgent string
	// unixPath is the socket of a unix:// address.
	unixPath string
}

// New returns a client of the controller at cfg.Address.
func New(cfg Config) (*Client, error) {
	addr := cfg.Address
	if addr == "" {
		addr = os.Getenv("AKCTL_ADDR")
	}
	if addr == "" {
		addr = DefaultAddress
	}
	token := cfg.Token
	if token == "" {
		token = os.Getenv("AKCTL_TOKEN")
	}
	c := &Client{addr: addr, token: token, userAgent: cfg.UserAgent}
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		hc.Timeout = 0
		c.http = &hc
	}
	if c.userAgent == "" {
		c.userAgent = "agentkernel-client-go"
	}
	switch {
	case strings.HasPrefix(addr, "unix://"), strings.HasPrefix(addr, "/"):
		c.unixPath = strings.TrimPrefix(addr, "unix://")
		if c.unixPath == "" {
			return nil, fmt.Errorf("address %q names no socket path", addr)
		}
		c.base = "http://controller"
		var d net.Dialer
		path := c.unixPath
		dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		switch {
		case c.http == nil:
			c.http = &http.Client{Transport: &http.Transport{
				DialContext:         dial,
				MaxIdleConnsPerHost: 8,
				IdleConnTimeout:     30 * time.Second,
			}}
		case c.http.Transport == nil:
			c.http.Transport = &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
		default:
			if tr, ok := c.http.Transport.(*http.Transport); ok {
				tr = tr.Clone()
				tr.Proxy, tr.DialContext = nil, dial
				c.http.Transport = tr
			}
		}
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("address %q is not a URL: want http://host:port or unix:///path", addr)
		}
		c.base = strings.TrimSuffix(addr, "/")
		if c.http == nil {
			c.http = &http.Client{Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConnsPerHost: 8,
				IdleConnTimeout:     30 * time.Second,
				TLSHandshakeTimeout: 10 * time.Second,
			}}
		}
	default:
		return nil, fmt.Errorf("address %q: want http://host:port, https://host:port or unix:///path/controller.sock", addr)
	}
	return c, nil
}

// Address is the controller's address as configured.
func (c *Client) Address() string { return c.addr }

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Errors an *Error matches with errors.Is.
var (
	ErrInvalid         = errors.New("invalid request")                   // 400
	ErrUnauthorized    = errors.New("unauthorized")                      // 401
	ErrNotFound        = errors.New("not found")                         // 404
	ErrConflict        = errors.New("conflict")                          // 409, other than ErrNotRunning
	ErrNotRunning      = errors.New("sandbox not running")               // 409 not_running
	ErrTooLarge        = errors.New("too large")                         // 413
	ErrRefused         = errors.New("refused")                           // 422
	ErrTooManyRequests = errors.New("too many requests")                 // 429
	ErrUnavailable     = errors.New("controller or Nomad not available") // 502, 503
	// ErrNoneReady is a claim the pool could not serve in time (503
	// none_ready); it matches ErrUnavailable too.
	ErrNoneReady = errors.New("no ready sandbox in the pool")
	// ErrExhausted is a claim on a pool with none Ready that max keeps
	// from making more (503 exhausted); it matches ErrUnavailable too.
	ErrExhausted = errors.New("pool exhausted")
)

// Error is an error answer of the controller.
type Error struct {
	StatusCode int
	// Code is the API's error code ("not_found", "not_running"...).
	Code    string
	Message string
	// Details are the answer's details as JSON values (per-object
	// problems of an apply, for example).
	Details []json.RawMessage
	// Phase is the sandbox's phase, on ErrNotRunning.
	Phase string
	// RetryAfter is the controller's hint, on 429 and 503.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("the controller answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return e.Message
}

// Is matches the sentinel errors of the package.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrNotRunning:
		return e.StatusCode == http.StatusConflict && e.Code == "not_running"
	case ErrConflict:
		return e.StatusCode == http.StatusConflict && e.Code != "not_running"
	case ErrTooLarge:
		return e.StatusCode == http.StatusRequestEntityTooLarge
	case ErrRefused:
		return e.StatusCode == http.StatusUnprocessableEntity
	case ErrTooManyRequests:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrUnavailable:
		return e.StatusCode == http.StatusBadGateway || e.StatusCode == http.StatusServiceUnavailable
	case ErrNoneReady:
		return e.StatusCode == http.StatusServiceUnavailable && e.Code == "none_ready"
	case ErrExhausted:
		return e.StatusCode == http.StatusServiceUnavailable && e.Code == "exhausted"
	}
	return false
}

// errorBody is the API's error answer.
type errorBody struct {
	Error struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Details []json.RawMessage `json:"details"`
	} `json:"error"`
}

// readError decodes an error answer.
func readError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body errorBody
	if json.Unmarshal(b, &body) == nil {
		e.Code, e.Message, e.Details = body.Error.Code, body.Error.Message, body.Error.Details
	}
	for _, d := range e.Details {
		var p struct {
			Phase string `json:"phase"`
		}
		if json.Unmarshal(d, &p) == nil && p.Phase != "" {
			e.Phase = p.Phase
		}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// request builds a request of the API; body is JSON unless it is an
// io.Reader, which is sent as it is.
func (c *Client) request(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, contentType = b, "application/octet-stream"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode the request: %w", err)
		}
		rd, contentType = bytes.NewReader(data), "application/json"
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send performs req; any answer but 2xx comes back as an *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
		}
		return nil, fmt.Errorf("%s %s at %s: %w", req.Method, req.URL.Path, c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

// do sends a request and decodes its JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	req, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the answer to %s %s: %w", method, path, err)
	}
	return nil
}

func sandboxPath(namespace, name string) string {
	return "/v1/sandboxes/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}
