package quota

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
)

// Policy is one rate limit or calendar quota. Exactly one of Rate and
// Calendar is set.
type Policy struct {
	// Name is unique among the policies; it names the policy in headers,
	// details, metrics and logs.
	Name string
	// Key is a CEL expression (see expr.go) whose value keys the counter;
	// "" keys by the client IP. The calls for which it cannot be evaluated
	// (metadata["x-tenant"] on a call without x-tenant) all share one
	// counter, the empty key's; they are logged (once per policy) and
	// counted in gatehouse_quota_key_errors_total.
	Key string
	// When is a CEL condition; the policy applies only when it is true. ""
	// means always.
	When string
	// Rate is a GCRA rate limit.
	Rate *Rate
	// Calendar is a calendar quota.
	Calendar *Calendar
	// Routes are the names of the routes the policy applies to; empty means
	// every route (a call no route takes is never limited).
	Routes []string
	// FailClosed refuses calls with codes.Unavailable when the store
	// fails; otherwise the policy falls back to memory at its limit divided
	// by the replicas.
	FailClosed bool
	// Shadow decides and counts, but never refuses.
	Shadow bool
}

// Principal is who made a call, as the policies' CEL sees it.
type Principal struct {
	// Subject identifies the caller; "" when unauthenticated.
	Subject string
	// APIKey is the id of the API key the caller used; "" otherwise.
	APIKey string
	// Labels are the caller's labels (an API key's plan: free).
	Labels map[string]string
	// Claims are the caller's verified claims.
	Claims map[string]any
}

// Call is what the policies know about a call.
type Call struct {
	// Route is the name of the route that takes the call; "" when none
	// does, and then no policy applies.
	Route string
	// Method is the full method, "/pkg.Service/Method".
	Method string
	// Metadata is the incoming metadata (HTTP headers for REST calls).
	Metadata map[string][]string
	// SourceIP is the client's IP address; "" when unknown.
	SourceIP string
	// Principal is who made the call.
	Principal Principal
}

// Outcome is one policy's decision on a call.
type Outcome struct {
	// Policy is the policy's name.
	Policy string
	// Shadow is true for a shadow policy: its refusals do not refuse.
	Shadow bool
	// Allowed is the policy's decision.
	Allowed bool
	// StoreFailed is true when the shared store failed (or is down): the
	// decision is the in-memory fallback's, or Unavailable.
	StoreFailed bool
	// Unavailable is true when the store failed and the policy fails
	// closed: the call is refused as unavailable, and the limit fields
	// other than Limit and Window are zero.
	Unavailable bool
	// Limit is the allowance: requests per Window.
	Limit uint64
	// Window is the period of Limit: the rate's period, or the current
	// calendar window's length.
	Window time.Duration
	// Remaining, RetryAfter and ResetAfter are the store's answer.
	Remaining  int64
	RetryAfter time.Duration
	ResetAfter time.Duration
	// Describe is the limit in words, for error messages.
	Describe string
}

// Verdict is the decision on a call: every applicable policy's outcome, in
// policy order.
type Verdict struct {
	Outcomes []Outcome
}

// Refused returns the outcomes of the non-shadow policies that refused the
// call because it is over their limit.
func (v Verdict) Refused() []Outcome {
	var out []Outcome
	for _, o := range v.Outcomes {
		if !o.Shadow && !o.Allowed && !o.Unavailable {
			out = append(out, o)
		}
	}
	return out
}

// Unavailable returns the outcomes of the non-shadow policies that fail
// closed and whose store failed.
func (v Verdict) Unavailable() []Outcome {
	var out []Outcome
	for _, o := range v.Outcomes {
		if !o.Shadow && o.Unavailable {
			out = append(out, o)
		}
	}
	return out
}

// compiled is a Policy ready to use.
type compiled struct {
	Policy
	key      cel.Program // nil: the client IP
	when     cel.Program // nil: always
	routes   map[string]bool
	fallback Store // the in-memory fallback, for FAIL_OPEN
	rate     Rate  // Rate divided by the replicas
	cal      Calendar
	// keyFailed is set when key first fails to evaluate, which is logged
	// once.
	keyFailed atomic.Bool
}

// Limiter applies policies to calls. It is safe for concurrent use.
type Limiter struct {
	policies []*compiled
	store    Store
	remote   bool // the store is shared (Redis): failures fall back
	o        options

	down      atomic.Bool  // the store failed and no probe has succeeded since
	nextProbe atomic.Int64 // unix nanos before which a down store is skipped
	probing   sync.Mutex   // one probe at a time
}

// New compiles policies. store holds the counters; nil means a new Memory.
// replicas is how many gateways share store; a policy that fails open
// enforces its limit divided by replicas in memory while store is down.
func New(policies []Policy, store Store, replicas uint32, opts ...Option) (*Limiter, error) {
	l := &Limiter{o: evaluate(opts), store: store, remote: store != nil}
	if store == nil {
		l.store = NewMemory(WithMemoryClock(l.o.now), WithMemoryMaxKeys(l.o.maxKeys))
	}
	replicas = max(replicas, 1)
	var fallback *Memory
	seen := map[string]bool{}
	for i, p := range policies {
		if seen[p.Name] {
			return nil, fmt.Errorf("policies[%d]: duplicate name %q", i, p.Name)
		}
		seen[p.Name] = true
		if (p.Rate == nil) == (p.Calendar == nil) {
			return nil, fmt.Errorf("policies[%d] %q: give exactly one of rate and quota", i, p.Name)
		}
		c := &compiled{Policy: p}
		if p.Rate != nil {
			if p.Rate.Requests == 0 || p.Rate.Per <= 0 {
				return nil, fmt.Errorf("policies[%d] %q: rate needs requests and per", i, p.Name)
			}
			c.rate = p.Rate.divide(replicas)
		} else {
			if p.Calendar.Requests == 0 || (p.Calendar.Per != Day && p.Calendar.Per != Month) {
				return nil, fmt.Errorf("policies[%d] %q: quota needs requests and per DAY or MONTH", i, p.Name)
			}
			c.cal = p.Calendar.divide(replicas)
		}
		var err error
		if p.Key != "" {
			if c.key, err = compile(p.Key, cel.StringType); err != nil {
				return nil, fmt.Errorf("policies[%d] %q: key: %w", i, p.Name, err)
			}
		}
		if p.When != "" {
			if c.when, err = compile(p.When, cel.BoolType); err != nil {
				return nil, fmt.Errorf("policies[%d] %q: when: %w", i, p.Name, err)
			}
		}
		if len(p.Routes) > 0 {
			c.routes = map[string]bool{}
			for _, r := range p.Routes {
				c.routes[r] = true
			}
		}
		if l.remote && !p.FailClosed {
			if fallback == nil {
				fallback = NewMemory(WithMemoryClock(l.o.now), WithMemoryMaxKeys(l.o.maxKeys))
			}
			c.fallback = fallback
		}
		l.policies = append(l.policies, c)
	}
	if l.remote {
		l.o.metrics.storeUp(true)
	}
	return l, nil
}

// Policies returns the names of the policies, in order.
func (l *Limiter) Policies() []string {
	out := make([]string, 0, len(l.policies))
	for _, p := range l.policies {
		out = append(out, p.Name)
	}
	return out
}

// StoreDown reports whether the shared store is considered down.
func (l *Limiter) StoreDown() bool { return l.down.Load() }

// Limit decides on call: it asks the policies that apply, in order, and
// counts the call against each, until one refuses it. The policies after a
// refusing one do not count the call; those before it have counted it (put
// the cheapest-to-lose allowance, a short rate, before a calendar quota).
// Limit returns ctx's error when ctx ends while a store is asked.
func (l *Limiter) Limit(ctx context.Context, call *Call) (Verdict, error) {
	var v Verdict
	if call.Route == "" {
		return v, nil
	}
	var vs *vars
	for _, p := range l.policies {
		if p.routes != nil && !p.routes[call.Route] {
			continue
		}
		if vs == nil {
			vs = &vars{c: call}
		}
		if p.when != nil && !l.holds(p, vs) {
			continue
		}
		key := p.Name + ":" + l.keyOf(p, call, vs)
		o, err := l.decide(ctx, p, key)
		if err != nil {
			return Verdict{}, err
		}
		l.o.metrics.decided(o)
		v.Outcomes = append(v.Outcomes, o)
		if !o.Allowed && !o.Shadow {
			break // refused: the policies after it do not count the call
		}
	}
	return v, nil
}

// holds evaluates a policy's when; an evaluation error (a label the
// principal lacks) means it does not hold.
func (l *Limiter) holds(p *compiled, vs *vars) bool {
	out, _, err := p.when.Eval(vs)
	if err != nil {
		return false
	}
	b, _ := out.Value().(bool)
	return b
}

// keyOf evaluates a policy's key. An evaluation error (metadata the call
// does not carry) keys the call by the empty string, shared by all such
// calls: it is counted in gatehouse_quota_key_errors_total, and logged the
// first time for each policy.
func (l *Limiter) keyOf(p *compiled, call *Call, vs *vars) string {
	if p.key == nil {
		return call.SourceIP
	}
	out, _, err := p.key.Eval(vs)
	if err != nil {
		l.o.metrics.keyError(p.Name)
		if p.keyFailed.CompareAndSwap(false, true) {
			l.o.log.Warn("quota policy key could not be evaluated: the calls whose key cannot be evaluated share one counter (logged once per policy; gatehouse_quota_key_errors_total counts them)",
				"policy", p.Name, "key", p.Key, "error", err.Error())
		}
		return ""
	}
	if s, ok := out.Value().(string); ok {
		return s
	}
	return fmt.Sprint(out.Value())
}

// decide asks the store for one policy, and applies on_store_failure when
// the store fails.
func (l *Limiter) decide(ctx context.Context, p *compiled, key string) (Outcome, error) {
	o := Outcome{Policy: p.Name, Shadow: p.Shadow}
	res, err := l.ask(ctx, l.store, p, key, false)
	if err != nil && l.remote {
		if ctx.Err() != nil {
			return Outcome{}, ctx.Err()
		}
		o.StoreFailed = true
		if p.fallback == nil {
			o.Unavailable = true
			l.o.metrics.fallback(p.Name, "fail_closed")
			o.fillLimit(p, l.o.now())
			o.Describe = p.describe()
			return o, nil
		}
		l.o.metrics.fallback(p.Name, "fail_open")
		res, err = l.ask(ctx, p.fallback, p, key, true)
	}
	if err != nil {
		return Outcome{}, err
	}
	o.Allowed = res.Allowed
	o.Remaining, o.RetryAfter, o.ResetAfter = res.Remaining, res.RetryAfter, res.ResetAfter
	o.fillLimit(p, l.o.now())
	o.Describe = p.describe()
	return o, nil
}

// fillLimit sets the limit and window of a policy's outcome.
func (o *Outcome) fillLimit(p *compiled, now time.Time) {
	if p.Rate != nil {
		o.Limit, o.Window = uint64(p.Rate.Requests), p.Rate.Per
		return
	}
	start, end := p.Calendar.Per.bounds(now)
	o.Limit, o.Window = p.Calendar.Requests, end.Sub(start)
}

func (p *compiled) describe() string {
	if p.Rate != nil {
		return p.Rate.String()
	}
	return p.Calendar.String()
}

// ask asks store about key, within the store timeout when it is the shared
// store. While the shared store is down, calls skip it except for one
// probe per probe interval.
func (l *Limiter) ask(ctx context.Context, store Store, p *compiled, key string, fallback bool) (Result, error) {
	if fallback || !l.remote {
		if p.Rate != nil {
			return store.AllowRate(ctx, key, l.limitOf(p, fallback).rate)
		}
		return store.AllowCalendar(ctx, key, l.limitOf(p, fallback).cal)
	}
	if l.down.Load() {
		if l.o.now().UnixNano() < l.nextProbe.Load() || !l.probing.TryLock() {
			return Result{}, ErrStoreDown
		}
		defer l.probing.Unlock()
	}
	cctx, cancel := context.WithTimeout(ctx, l.o.timeout)
	defer cancel()
	var res Result
	var err error
	if p.Rate != nil {
		res, err = store.AllowRate(cctx, key, *p.Rate)
	} else {
		res, err = store.AllowCalendar(cctx, key, *p.Calendar)
	}
	if err != nil && ctx.Err() == nil {
		l.failed(err)
	} else if err == nil {
		l.recovered()
	}
	return res, err
}

// limits are what a policy enforces: its own, or its share while falling
// back.
type limits struct {
	rate Rate
	cal  Calendar
}

func (l *Limiter) limitOf(p *compiled, fallback bool) limits {
	if fallback {
		return limits{rate: p.rate, cal: p.cal}
	}
	var out limits
	if p.Rate != nil {
		out.rate = *p.Rate
	}
	if p.Calendar != nil {
		out.cal = *p.Calendar
	}
	return out
}

// failed records a store failure: the first after a success turns the
// store down, logged and counted once.
func (l *Limiter) failed(err error) {
	l.nextProbe.Store(l.o.now().Add(l.o.probeInterval).UnixNano())
	if l.down.CompareAndSwap(false, true) {
		l.o.log.Warn("quota store unreachable: policies fall back (FAIL_OPEN: in memory at limit / replicas; FAIL_CLOSED: refused as UNAVAILABLE) until it answers again",
			"error", err.Error(), "timeout", l.o.timeout.String(), "probe_interval", l.o.probeInterval.String())
		l.o.metrics.transition(false)
	}
}

// recovered records a store success: the first after a failure turns the
// store up again, logged and counted once.
func (l *Limiter) recovered() {
	if l.down.CompareAndSwap(true, false) {
		l.o.log.Info("quota store reachable again: policies enforce the shared limits")
		l.o.metrics.transition(true)
	}
}

// Option configures a Limiter.
type Option interface {
	apply(*options)
}

type options struct {
	log           *slog.Logger
	now           func() time.Time
	timeout       time.Duration
	probeInterval time.Duration
	maxKeys       int
	metrics       *Metrics
}

// Defaults.
const (
	DefaultTimeout       = 50 * time.Millisecond
	DefaultProbeInterval = 250 * time.Millisecond
)

func evaluate(opts []Option) options {
	o := options{
		log:           slog.New(slog.DiscardHandler),
		now:           time.Now,
		timeout:       DefaultTimeout,
		probeInterval: DefaultProbeInterval,
		maxKeys:       DefaultMaxKeys,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the logger of store transitions. Default: discard.
func WithLogger(log *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if log != nil {
			o.log = log
		}
	})
}

// WithNow sets the clock of the in-memory stores and of probing. Default
// time.Now.
func WithNow(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// WithTimeout bounds each call to the shared store. Default 50ms.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	})
}

// WithProbeInterval sets how often a store that is down is tried again;
// between tries, calls do not wait for it. Default 250ms.
func WithProbeInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.probeInterval = d
		}
	})
}

// WithMaxKeys bounds the keys of each in-memory store (the store itself
// when there is no shared one, and the fallback). Default DefaultMaxKeys.
func WithMaxKeys(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.maxKeys = n
		}
	})
}

// WithMetrics counts decisions, fallbacks and store transitions in m.
func WithMetrics(m *Metrics) Option {
	return optionFunc(func(o *options) { o.metrics = m })
}
