package nomad

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Error kinds. Every error this package returns from a Nomad call matches
// exactly one of them with errors.Is, so callers decide once what to do.
var (
	// ErrNotFound: the job, allocation or variable does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a check-and-set write lost to another writer. Real
	// Nomad answers a job CAS conflict with HTTP 500 and a body starting
	// "Enforcing job modify index" (facts 90-95), a variable CAS
	// conflict with 409.
	ErrConflict = errors.New("check-and-set conflict")
	// ErrInvalid: Nomad refused the request itself (400, or 500 carrying
	// job validation errors as in facts 66, 70, 71). Retrying cannot help.
	ErrInvalid = errors.New("rejected as invalid")
	// ErrPermissionDenied: the token lacks a capability (403, or 500
	// "Permission denied" where Nomad forwards an ACL refusal over RPC,
	// as it does for some event-stream refusals).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrTransient: Nomad could not be reached or could not answer now
	// (connection refused or reset, timeouts, no cluster leader, other
	// 5xx, 429). Worth retrying with backoff.
	ErrTransient = errors.New("transient")
)

// Error is a classified failure of one Nomad call.
type Error struct {
	Op     string // what was attempted: `register job "agentkernel-x"`
	Kind   error  // one of the Err* kinds above
	Status int    // HTTP status, 0 when no response arrived
	Body   string // Nomad's plain-text error body, trimmed
	Err    error  // the underlying error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %v (HTTP %d: %s)", e.Op, e.Kind, e.Status, e.Body)
	}
	return fmt.Sprintf("%s: %v: %v", e.Op, e.Kind, e.Err)
}

func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// validationBody is how Nomad reports job validation failures: a
// multierror list ("1 error occurred:\n\t* Job ID contains a space").
var validationBody = regexp.MustCompile(`^\d+ errors? occurred:`)

// classify wraps err from a nomad/api call with its kind. A cancelled or
// expired caller context is returned as is: it is the caller's decision,
// not Nomad's failure.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var ure api.UnexpectedResponseError
	if errors.As(err, &ure) && ure.HasStatusCode() {
		body := strings.TrimSpace(ure.Body())
		return &Error{Op: op, Kind: kindOfStatus(ure.StatusCode(), body), Status: ure.StatusCode(), Body: body, Err: err}
	}
	return &Error{Op: op, Kind: kindOfTransport(err), Err: err}
}

func kindOfStatus(status int, body string) error {
	switch {
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusConflict:
		return ErrConflict
	case status == http.StatusForbidden:
		return ErrPermissionDenied
	case status == http.StatusTooManyRequests:
		return ErrTransient
	case status == http.StatusInternalServerError && strings.HasPrefix(body, "Enforcing job modify index"):
		return ErrConflict
	case status == http.StatusInternalServerError && validationBody.MatchString(body):
		return ErrInvalid
	case status >= 500 && strings.Contains(strings.ToLower(body), "permission denied"):
		// An ACL refusal that came back through an RPC rather than the
		// HTTP layer keeps its text but not its 403. Retrying cannot help
		// until the token changes.
		return ErrPermissionDenied
	case status >= 500:
		return ErrTransient
	case status >= 400:
		return ErrInvalid
	}
	return ErrTransient
}

// kindOfTransport sorts errors that came without an HTTP response. Only
// failures of reaching Nomad are transient; anything else (a response
// that would not decode, say) is reported as invalid rather than retried
// forever.
func kindOfTransport(err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTransient
	case errors.As(err, &netErr):
		return ErrTransient
	case strings.Contains(err.Error(), "No cluster leader"):
		return ErrTransient
	}
	return ErrInvalid
}

// Backoff is a capped exponential backoff with full jitter. Time is
// injected: After defaults to time.After, and tests replace it.
type Backoff struct {
	Base, Max   time.Duration
	MaxAttempts int // 0 = until the context ends
	After       func(time.Duration) <-chan time.Time
	Rand        func(n int64) int64 // [0,n); default math/rand/v2
}

// DefaultBackoff starts at 100 ms and caps at 30 s.
var DefaultBackoff = Backoff{Base: 100 * time.Millisecond, Max: 30 * time.Second}

// Delay is the wait before retry number attempt (0-based): a random
// duration up to min(Max, Base*2^attempt).
func (b Backoff) Delay(attempt int) time.Duration {
	ceiling := b.Max
	if attempt < 32 {
		if d := b.Base << attempt; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceiling) + 1))
}

// Retry calls fn until it succeeds, fails with an error that is not
// ErrTransient, the attempts run out, or ctx ends.
func (b Backoff) Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	after := b.After
	if after == nil {
		after = time.After
	}
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil || !errors.Is(err, ErrTransient) {
			return err
		}
		if b.MaxAttempts > 0 && attempt+1 >= b.MaxAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-after(b.Delay(attempt)):
		}
	}
}
