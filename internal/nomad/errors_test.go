package nomad

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestClassifyNomadAnswers replays answers real Nomad gave (the fact
// numbers name the recordings) through the real nomad/api client and
// checks the kind each one is given.
func TestClassifyNomadAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"unknown job (fact 60)", 404, "job not found", ErrNotFound},
		{"stale CAS index (fact 90)", 500, "Enforcing job modify index 11: job exists with conflicting job modify index: 56", ErrConflict},
		{"create-only CAS on an existing job (fact 92)", 500, "Enforcing job modify index 0: job already exists", ErrConflict},
		{"variable CAS conflict", 409, `{"Namespace":"default","Path":"a"}`, ErrConflict},
		{"job validation errors (fact 66)", 500, "2 errors occurred:\n\t* Invalid job type: \"nope\"\n\t* Missing job task groups\n\n", ErrInvalid},
		{"one validation error (fact 71)", 500, "1 error occurred:\n\t* Job ID contains a space\n\n", ErrInvalid},
		{"no Job wrapper (fact 67)", 400, "Job must be specified", ErrInvalid},
		{"malformed JSON (fact 65)", 400, "unexpected EOF", ErrInvalid},
		{"permission denied", 403, "Permission denied", ErrPermissionDenied},
		{"permission denied forwarded as a server error", 500, "Permission denied", ErrPermissionDenied},
		{"permission denied wrapped by an RPC error", 500, "rpc error: Permission denied", ErrPermissionDenied},
		{"no cluster leader", 500, "No cluster leader", ErrTransient},
		{"other server error", 500, "rpc error: EOF", ErrTransient},
		{"bad gateway", 502, "upstream down", ErrTransient},
		{"rate limited", 429, "too many requests", ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, err := api.NewClient(&api.Config{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Jobs().Info("agentkernel-x", nil)
			got := classify(`get job "agentkernel-x"`, err)
			if !errors.Is(got, tt.want) {
				t.Fatalf("classified as %v, want %v", got, tt.want)
			}
			for _, other := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrPermissionDenied, ErrTransient} {
				if other != tt.want && errors.Is(got, other) {
					t.Errorf("also matches %v", other)
				}
			}
			var ne *Error
			if !errors.As(got, &ne) || ne.Status != tt.status {
				t.Errorf("error %#v does not carry status %d", got, tt.status)
			}
		})
	}
}

func TestClassifyTransportFailures(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more: connection refused

	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Jobs().Info("agentkernel-x", nil)
	if got := classify("get job", err); !errors.Is(got, ErrTransient) {
		t.Errorf("connection refused classified as %v, want transient", got)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err = c.Jobs().Info("agentkernel-x", (&api.QueryOptions{}).WithContext(ctx))
	got := classify("get job", err)
	if !errors.Is(got, context.Canceled) || errors.Is(got, ErrTransient) {
		t.Errorf("cancelled call classified as %v, want the context error and not transient", got)
	}
}

func TestBackoffDelayIsCappedExponential(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second, Rand: func(n int64) int64 { return n - 1 }}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Delay(i); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := b.Delay(200); got != time.Second {
		t.Errorf("Delay(200) = %v, want the cap", got)
	}
	zero := Backoff{Base: time.Second, Max: time.Minute, Rand: func(int64) int64 { return 0 }}
	if zero.Delay(3) != 0 {
		t.Errorf("full jitter must allow a zero delay")
	}
}

func TestRetry(t *testing.T) {
	transient := &Error{Op: "x", Kind: ErrTransient}
	invalid := &Error{Op: "x", Kind: ErrInvalid}
	tests := []struct {
		name      string
		results   []error
		attempts  int
		wantCalls int
		wantErr   error
	}{
		{"succeeds after transient failures", []error{transient, transient, nil}, 0, 3, nil},
		{"stops at a permanent error", []error{transient, invalid, nil}, 0, 2, ErrInvalid},
		{"gives up after max attempts", []error{transient, transient, transient, nil}, 2, 2, ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := Backoff{Base: time.Second, Max: time.Minute, MaxAttempts: tt.attempts}
				calls := 0
				start := time.Now()
				err := b.Retry(t.Context(), func(context.Context) error {
					calls++
					return tt.results[calls-1]
				})
				if calls != tt.wantCalls {
					t.Errorf("calls = %d, want %d", calls, tt.wantCalls)
				}
				if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if elapsed := time.Since(start); elapsed > time.Duration(calls)*time.Minute {
					t.Errorf("waited %v, more than the cap allows", elapsed)
				}
			})
		})
	}
	t.Run("context end stops the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			b := Backoff{Base: time.Hour, Max: time.Hour, Rand: func(n int64) int64 { return n - 1 }}
			err := b.Retry(ctx, func(context.Context) error { return transient })
			if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want transient and the deadline", err)
			}
		})
	})
}
