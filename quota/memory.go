package quota

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys is the default bound on the keys a Memory store holds.
const DefaultMaxKeys = 1 << 20

// memoryShards is the number of independently locked parts of a Memory
// store.
const memoryShards = 32

// Memory is the in-memory Store: GCRA buckets and calendar counters for one
// process. Its memory is bounded: a shard that fills up first drops its idle
// keys (a bucket full again, a window that has ended: dropping them changes
// no decision); only when more than 7/8 of it is still in use does it drop
// live keys, at random, which then start afresh (EvictedLive counts them).
type Memory struct {
	now      func() time.Time
	perShard int
	seed     maphash.Seed
	shards   [memoryShards]memShard
	live     atomic.Uint64 // live keys evicted
}

type memShard struct {
	mu sync.Mutex
	m  map[string]*memEntry
}

// memEntry is one key's state. For a rate, v is the theoretical arrival
// time (unix nanoseconds); for a calendar quota, window is the window's
// start and v the count. idle is when the entry stops mattering.
type memEntry struct {
	v      int64
	window int64
	idle   int64
}

var _ Store = (*Memory)(nil)

// MemoryOption configures a Memory store.
type MemoryOption interface {
	applyMemory(*Memory)
}

type memoryOptionFunc func(*Memory)

func (f memoryOptionFunc) applyMemory(m *Memory) { f(m) }

// WithMemoryClock sets the clock of a Memory store. Default time.Now.
func WithMemoryClock(now func() time.Time) MemoryOption {
	return memoryOptionFunc(func(m *Memory) {
		if now != nil {
			m.now = now
		}
	})
}

// WithMemoryMaxKeys bounds the keys a Memory store holds. Default DefaultMaxKeys.
func WithMemoryMaxKeys(n int) MemoryOption {
	return memoryOptionFunc(func(m *Memory) {
		if n > 0 {
			m.perShard = max(n/memoryShards, 1)
		}
	})
}

// NewMemory returns an empty in-memory store.
func NewMemory(opts ...MemoryOption) *Memory {
	m := &Memory{now: time.Now, perShard: DefaultMaxKeys / memoryShards, seed: maphash.MakeSeed()}
	for _, o := range opts {
		o.applyMemory(m)
	}
	for i := range m.shards {
		m.shards[i].m = map[string]*memEntry{}
	}
	return m
}

// Len returns the number of keys held.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// EvictedLive returns how many keys that still held state were evicted to
// keep the store within its bound.
func (m *Memory) EvictedLive() uint64 { return m.live.Load() }

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)%memoryShards]
}

// entry returns key's entry, making room for a new one if needed. The
// shard's lock is held.
func (m *Memory) entry(s *memShard, key string, now int64) *memEntry {
	if e, ok := s.m[key]; ok {
		return e
	}
	if len(s.m) >= m.perShard {
		m.makeRoom(s, now)
	}
	e := &memEntry{}
	s.m[key] = e
	return e
}

// makeRoom drops idle entries and, if the shard is still more than 7/8
// full, live ones (map order is random enough for this).
func (m *Memory) makeRoom(s *memShard, now int64) {
	for k, e := range s.m {
		if e.idle <= now {
			delete(s.m, k)
		}
	}
	keep := m.perShard - m.perShard/8
	if keep >= m.perShard {
		keep = m.perShard - 1
	}
	for k := range s.m {
		if len(s.m) <= keep {
			break
		}
		delete(s.m, k)
		m.live.Add(1)
	}
}

// AllowRate implements Store with GCRA: each call moves the key's
// theoretical arrival time (TAT) one emission interval on; a call is
// allowed when the TAT it leaves is at most capacity intervals ahead of now.
func (m *Memory) AllowRate(_ context.Context, key string, r Rate) (Result, error) {
	now := m.now().UnixNano()
	t := int64(r.interval())
	tau := t * int64(r.capacity())
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := m.entry(s, key, now)
	tat := max(e.v, now)
	newTAT := tat + t
	allowAt := newTAT - tau
	if now < allowAt {
		return Result{RetryAfter: time.Duration(allowAt - now), ResetAfter: time.Duration(tat - now)}, nil
	}
	e.v, e.idle = newTAT, newTAT
	return Result{
		Allowed:    true,
		Remaining:  (now - allowAt) / t,
		RetryAfter: 0,
		ResetAfter: time.Duration(newTAT - now),
	}, nil
}

// AllowCalendar implements Store: a count per key and UTC window.
func (m *Memory) AllowCalendar(_ context.Context, key string, c Calendar) (Result, error) {
	nowT := m.now()
	now := nowT.UnixNano()
	start, end := c.Per.bounds(nowT)
	reset := end.Sub(nowT)
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := m.entry(s, key, now)
	if e.window != start.UnixNano() {
		e.window, e.v = start.UnixNano(), 0
	}
	e.idle = end.UnixNano()
	if uint64(e.v) >= c.Requests {
		return Result{RetryAfter: reset, ResetAfter: reset}, nil
	}
	e.v++
	return Result{Allowed: true, Remaining: int64(c.Requests - uint64(e.v)), ResetAfter: reset}, nil
}
