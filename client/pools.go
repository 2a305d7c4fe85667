package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// ClaimOptions shape a claim. The zero value claims a sandbox that is
// Ready now, with the pool's claim_ttl.
type ClaimOptions struct {
	// TTL is the claimed sandbox's lifetime from the claim; zero takes
	// the pool's claim_ttl.
	TTL time.Duration
	// Labels are added to the sandbox's.
	Labels map[string]string
	// Files are written into the sandbox, path to content, before the
	// claim answers.
	Files map[string]string
	// Wait is how long the controller waits for a Ready sandbox when none
	// is (at most 50 seconds); zero answers at once.
	Wait time.Duration
}

// Claim takes a Ready sandbox from the pool: the controller marks one
// claimed and answers without waiting for Nomad. The sandbox is then an
// ordinary sandbox (Sandbox(namespace, name) works in it) until deleted
// or its TTL runs out. No pool of that name: ErrNotFound; none Ready in
// time: ErrNoneReady, whose *Error carries the controller's RetryAfter;
// none Ready and the pool at its max: ErrExhausted.
func (c *Client) Claim(ctx context.Context, namespace, pool string, o ClaimOptions) (*Sandbox, error) {
	body := struct {
		TTL    string            `json:"ttl,omitempty"`
		Labels map[string]string `json:"labels,omitempty"`
		Files  map[string]string `json:"files,omitempty"`
		Wait   string            `json:"wait,omitempty"`
	}{Labels: o.Labels, Files: o.Files}
	if o.TTL > 0 {
		body.TTL = o.TTL.String()
	}
	if o.Wait > 0 {
		body.Wait = o.Wait.String()
	}
	var sb Sandbox
	path := "/v1/pools/" + url.PathEscape(namespace) + "/" + url.PathEscape(pool) + "/claim"
	if err := c.do(ctx, http.MethodPost, path, nil, body, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}
