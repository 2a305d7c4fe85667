package nomad

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/nomad/api"
)

// instrument wraps the client's transport so that every request is
// bounded in time (timeout > 0) and reported (report not nil). The
// transport is built as api.NewClient would build it, TLS settings
// included, so that nothing else changes. It returns the transport
// before wrapping, which exec's WebSocket needs as it is (nomad/api dials
// it only from an *http.Transport), or nil when it wrapped nothing.
func instrument(c *api.Config, report func(method, endpoint string, code int, d time.Duration), timeout time.Duration) (http.RoundTripper, error) {
	if report == nil && timeout <= 0 {
		return nil, nil
	}
	switch {
	case c.HttpClient != nil:
	case strings.HasPrefix(c.Address, "unix:"):
		// What api.NewClient does for a socket, such as a task's
		// workload-API socket: every request dialled to the path.
		u, err := url.Parse(c.Address)
		if err != nil {
			return nil, fmt.Errorf("nomad address %q: %w", c.Address, err)
		}
		path := u.EscapedPath()
		c.HttpClient = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}}
	default:
		// What api.NewClient does for a TCP address.
		hc := cleanhttp.DefaultPooledClient()
		tr := hc.Transport.(*http.Transport)
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		tr.ForceAttemptHTTP2 = false
		if err := api.ConfigureTLS(hc, c.TLSConfig); err != nil {
			return nil, fmt.Errorf("configure nomad TLS: %w", err)
		}
		c.HttpClient = hc
	}
	base := c.HttpClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	plain := base
	if timeout > 0 {
		base = &timeoutTransport{base: base, timeout: timeout}
	}
	if report != nil {
		base = &reportingTransport{base: base, report: report}
	}
	c.HttpClient.Transport = base
	return plain, nil
}

type reportingTransport struct {
	base   http.RoundTripper
	report func(method, endpoint string, code int, d time.Duration)
}

func (t *reportingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	code := 0
	if err == nil {
		code = resp.StatusCode
	}
	t.report(r.Method, Endpoint(r.URL.Path), code, time.Since(start))
	return resp, err
}

// Endpoint replaces the IDs in a Nomad API path with placeholders, so that
// metrics have one series per endpoint: /v1/job/agentkernel-x/allocations
// becomes /v1/job/:id/allocations.
func Endpoint(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) < 3 || parts[0] != "v1" {
		return path
	}
	switch parts[1] {
	case "job", "allocation", "evaluation", "node", "namespace", "deployment":
		parts[2] = ":id"
	case "var":
		return "/v1/var/:path"
	case "client":
		// /v1/client/allocation/<id>/exec, /v1/client/fs/<op>/<id>
		switch {
		case parts[2] == "allocation" && len(parts) > 3:
			parts[3] = ":id"
		case parts[2] == "fs" && len(parts) > 4:
			parts[4] = ":id"
		}
	}
	return "/" + strings.Join(parts, "/")
}
