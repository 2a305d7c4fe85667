package reconcile

import (
	"context"
	"fmt"

	"golang.org/x/time/rate"
)

// WriteLimiter bounds the rate of writes to Nomad across all keys. The
// queue's backoff only spaces out retries of one key; after a restart or
// a bulk apply every key is ready at once, and this is what keeps the
// workers from flooding the Nomad servers.
type WriteLimiter struct {
	limiter *rate.Limiter
}

// NewWriteLimiter allows perSecond writes a second on average with bursts
// of up to burst. perSecond <= 0 means unlimited; burst < 1 means 1.
func NewWriteLimiter(perSecond float64, burst int) *WriteLimiter {
	limit := rate.Limit(perSecond)
	if perSecond <= 0 {
		limit = rate.Inf
	}
	return &WriteLimiter{limiter: rate.NewLimiter(limit, max(burst, 1))}
}

// Wait blocks until one write is allowed or ctx ends. It fails without
// waiting when ctx's deadline comes before the write would be allowed.
func (w *WriteLimiter) Wait(ctx context.Context) error {
	if err := w.limiter.Wait(ctx); err != nil {
		return fmt.Errorf("wait for write slot: %w", err)
	}
	return nil
}
