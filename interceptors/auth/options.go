package auth

import (
	"io"
	"log/slog"
	"net/http"
	"time"
)

// An Option configures an [Authenticator] or the interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	now           func() time.Time
	client        *http.Client
	logger        *slog.Logger
	maxTokenBytes int
	filePoll      time.Duration
	fetchTimeout  time.Duration
	onFetch       func(provider string, err error)
	onDeny        func(reason, route string)

	// interceptor options
	requireAuth   bool
	exempt        func(fullMethod string) bool
	subjectKey    string
	credentialKey string
	claimsPrefix  string
	minter        *Minter
}

func defaultOptions() options {
	return options{
		now:           time.Now,
		logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		maxTokenBytes: 8 << 10,
		filePoll:      time.Second,
		fetchTimeout:  10 * time.Second,
		exempt:        func(string) bool { return false },
		subjectKey:    "x-gatehouse-subject",
		credentialKey: "x-gatehouse-credential",
		claimsPrefix:  "x-gatehouse-claims-",
	}
}

func evaluate(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the clock of token validation, JWKS refresh and file
// polling (for tests). Default: time.Now.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// WithHTTPClient sets the client that fetches JWKS documents. Default: a
// client of its own that follows no redirect and times out after the fetch
// timeout; its idle connections are closed by [Authenticator.Close].
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) { o.client = c })
}

// WithLogger sets the logger of refusals (at Info, with their precise
// reason) and of JWKS and key file problems. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithMaxTokenBytes bounds the size of a bearer token or API key; longer
// ones are refused before anything is decoded. Default 8 KiB.
func WithMaxTokenBytes(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.maxTokenBytes = n
		}
	})
}

// WithFilePoll sets how often, at most, key files (JWKS files, API key
// files) are checked for changes; they are checked when a call needs them.
// Default 1s.
func WithFilePoll(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.filePoll = d
		}
	})
}

// WithFetchTimeout bounds one JWKS fetch. Default 10s.
func WithFetchTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.fetchTimeout = d
		}
	})
}

// WithFetchHook sets a function called after each JWKS fetch with its
// outcome (for metrics and tests). It must not block.
func WithFetchHook(f func(provider string, err error)) Option {
	return optionFunc(func(o *options) { o.onFetch = f })
}

// WithRequireAuth makes the interceptors refuse, with PERMISSION_DENIED,
// every call whose route has no auth block and every call no route takes
// (default-deny), except the methods WithExempt names. A route that is
// public on purpose says so with an auth block that requires [None].
// Default false.
func WithRequireAuth(on bool) Option {
	return optionFunc(func(o *options) { o.requireAuth = on })
}

// WithExempt names methods that a default-deny listener still serves
// without credentials when no route takes them (health checks). Default:
// none.
func WithExempt(f func(fullMethod string) bool) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.exempt = f
		}
	})
}

// WithIdentityKeys sets the metadata keys of the identity passed to
// backends: the subject, the credential and the prefix of forwarded claims.
// Each should start with "x-gatehouse-", the prefix the director strips
// from inbound calls; empty keeps the default ("x-gatehouse-subject",
// "x-gatehouse-credential", "x-gatehouse-claims-").
func WithIdentityKeys(subject, credential, claimsPrefix string) Option {
	return optionFunc(func(o *options) {
		if subject != "" {
			o.subjectKey = subject
		}
		if credential != "" {
			o.credentialKey = credential
		}
		if claimsPrefix != "" {
			o.claimsPrefix = claimsPrefix
		}
	})
}

// WithDenialHook sets a function called for each refused call with its
// reason (as [Authenticator.Denials] counts it) and route ("" when no route
// took the call), for metrics. It must not block.
func WithDenialHook(f func(reason, route string)) Option {
	return optionFunc(func(o *options) { o.onDeny = f })
}

// WithInternalJWT makes the interceptors give every call they approve with
// a verified credential a token that m signs, in the metadata key
// m.Header() as "Bearer <token>", carrying the route's forwarded claims.
// Nil: none (the default).
func WithInternalJWT(m *Minter) Option {
	return optionFunc(func(o *options) { o.minter = m })
}
