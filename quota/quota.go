package quota

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Rate is a GCRA rate limit: Requests per Per, with up to Burst calls at
// once.
type Rate struct {
	// Requests allowed per Per, at least 1.
	Requests uint32
	// Per is the period, at least 1ms.
	Per time.Duration
	// Burst is how many calls may arrive at once: the bucket's capacity.
	// 0 counts as 1 (calls evenly spaced), so that from a full bucket at
	// most Burst + Requests × t/Per calls pass in any span t.
	Burst uint32
}

// capacity is the bucket size: Burst, at least 1.
func (r Rate) capacity() uint32 { return max(r.Burst, 1) }

// interval is the GCRA emission interval: the time one call's token takes
// to come back.
func (r Rate) interval() time.Duration { return max(r.Per/time.Duration(r.Requests), 1) }

// String describes the rate, e.g. "100 per 1s, burst 20".
func (r Rate) String() string {
	return fmt.Sprintf("%d per %v, burst %d", r.Requests, r.Per, r.capacity())
}

// divide returns the rate each of n replicas enforces alone: the same
// emission interval stretched n times, and the burst divided (at least 1).
func (r Rate) divide(n uint32) Rate {
	if n <= 1 {
		return r
	}
	return Rate{Requests: r.Requests, Per: r.Per * time.Duration(n), Burst: max(r.capacity()/n, 1)}
}

// Window is a UTC calendar window.
type Window uint8

const (
	// Day is the UTC calendar day.
	Day Window = iota + 1
	// Month is the UTC calendar month.
	Month
)

// String returns "DAY" or "MONTH".
func (w Window) String() string {
	switch w {
	case Day:
		return "DAY"
	case Month:
		return "MONTH"
	}
	return fmt.Sprintf("Window(%d)", uint8(w))
}

// bounds returns the window that holds t: its start and its end, in UTC.
func (w Window) bounds(t time.Time) (start, end time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	if w == Month {
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	start = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 0, 1)
}

// Calendar is a calendar quota: Requests per UTC day or month.
type Calendar struct {
	// Requests allowed per window, at least 1.
	Requests uint64
	// Per is the window.
	Per Window
}

// String describes the quota, e.g. "10000 per DAY".
func (c Calendar) String() string { return fmt.Sprintf("%d per %s", c.Requests, c.Per) }

// divide returns the quota each of n replicas enforces alone (at least 1).
func (c Calendar) divide(n uint32) Calendar {
	if n <= 1 {
		return c
	}
	return Calendar{Requests: max(c.Requests/uint64(n), 1), Per: c.Per}
}

// Result is a store's answer for one key.
type Result struct {
	// Allowed is true when the call was counted and may proceed.
	Allowed bool
	// Remaining is how many more calls the key may make right now.
	Remaining int64
	// RetryAfter is, when refused, how long until a call would be allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key's allowance is whole again: the
	// bucket full, or the calendar window over.
	ResetAfter time.Duration
}

// Store keeps counters. Implementations must be safe for concurrent use.
// A refused call is not counted. An error means the store could not
// decide; the Limiter then applies the policy's on_store_failure.
type Store interface {
	// AllowRate takes one call from key's GCRA bucket for rate.
	AllowRate(ctx context.Context, key string, rate Rate) (Result, error)
	// AllowCalendar counts one call against key's quota in the current
	// calendar window.
	AllowCalendar(ctx context.Context, key string, cal Calendar) (Result, error)
}

// ErrStoreDown is the error the Limiter uses when it skips a store that
// is known to be down, between probes.
var ErrStoreDown = errors.New("quota: store is down")
