package quota

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
	limiter "github.com/gatehouse-dev/gatehouse/quota"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Header and trailer keys the interceptors set.
const (
	// HeaderPolicy lists the enforcing policies' allowances.
	HeaderPolicy = "ratelimit-policy"
	// HeaderRateLimit lists what remains of each allowance.
	HeaderRateLimit = "ratelimit"
	// HeaderRetryAfter is, on a refusal, the seconds to wait.
	HeaderRetryAfter = "retry-after"
	// TrailerPushback is, on a refusal, the milliseconds to wait, as grpc-go
	// clients' retry policies read it.
	TrailerPushback = "grpc-retry-pushback-ms"
)

// Limiter decides on calls; *quota.Limiter is one. Limit must be safe for
// concurrent use, return within the store's timeout, and return an error
// only when ctx ends.
type Limiter interface {
	Limit(ctx context.Context, call *limiter.Call) (limiter.Verdict, error)
}

var _ Limiter = (*limiter.Limiter)(nil)

// UnaryServerInterceptor returns a unary server interceptor that enforces
// l's policies before the handler runs.
func UnaryServerInterceptor(l Limiter, opts ...Option) grpc.UnaryServerInterceptor {
	o := evaluate(opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		hdr, trl, err := o.check(ctx, l, info.FullMethod)
		if len(hdr) > 0 {
			_ = grpc.SetHeader(ctx, hdr)
		}
		if len(trl) > 0 {
			_ = grpc.SetTrailer(ctx, trl)
		}
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor returns a stream server interceptor that enforces
// l's policies when the stream starts, before the handler runs.
func StreamServerInterceptor(l Limiter, opts ...Option) grpc.StreamServerInterceptor {
	o := evaluate(opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		hdr, trl, err := o.check(ss.Context(), l, info.FullMethod)
		if len(hdr) > 0 {
			_ = ss.SetHeader(hdr)
		}
		if len(trl) > 0 {
			ss.SetTrailer(trl)
		}
		if err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// check decides on a call and returns the headers and trailers to set and,
// when the call is refused, its status error.
func (o *options) check(ctx context.Context, l Limiter, fullMethod string) (hdr, trl metadata.MD, err error) {
	md, ok := callinfo.From(ctx).Incoming() // the gateway's copy, read only
	if !ok {
		md, _ = metadata.FromIncomingContext(ctx)
	}
	route := o.route(ctx, fullMethod, md)
	if route == "" {
		return nil, nil, nil
	}
	call := &limiter.Call{Route: route, Method: fullMethod, Metadata: md, Principal: principal(callinfo.PrincipalFrom(ctx))}
	if a := o.source(ctx, md); a.IsValid() {
		call.SourceIP = a.String()
	}
	v, err := l.Limit(ctx, call)
	if err != nil {
		return nil, nil, status.FromContextError(err).Err()
	}
	hdr = Headers(v)
	callinfo.From(ctx).SetQuota(enforcing(v))
	if refused := v.Refused(); len(refused) > 0 {
		callinfo.From(ctx).SetDecision(callinfo.Decision{Denied: true, By: "quota:" + refused[0].Policy})
		wait := retryAfter(refused)
		hdr.Set(HeaderRetryAfter, strconv.FormatInt(ceilSeconds(wait), 10))
		trl = metadata.Pairs(TrailerPushback, strconv.FormatInt(ceilMillis(wait), 10))
		return hdr, trl, RefusalError(refused, wait)
	}
	if down := v.Unavailable(); len(down) > 0 {
		callinfo.From(ctx).SetDecision(callinfo.Decision{Denied: true, By: "quota:" + down[0].Policy})
		return hdr, nil, unavailableError(down)
	}
	return hdr, nil, nil
}

// RefusalError is the RESOURCE_EXHAUSTED status of a call that refused
// outcomes turned down: a QuotaFailure violation per policy and a
// RetryInfo with wait.
func RefusalError(refused []limiter.Outcome, wait time.Duration) error {
	names := make([]string, 0, len(refused))
	qf := &errdetails.QuotaFailure{}
	for _, r := range refused {
		names = append(names, fmt.Sprintf("%q (%s)", r.Policy, r.Describe))
		qf.Violations = append(qf.Violations, &errdetails.QuotaFailure_Violation{
			Subject:     "policy:" + r.Policy,
			Description: fmt.Sprintf("over the limit of %s; retry in %v", r.Describe, r.RetryAfter.Round(time.Millisecond)),
			QuotaId:     r.Policy,
			QuotaValue:  int64(min(r.Limit, 1<<63-1)),
		})
	}
	st := status.Newf(codes.ResourceExhausted, "gatehouse: over quota %s; retry in %v", strings.Join(names, ", "), wait.Round(time.Millisecond))
	if d, err := st.WithDetails(qf, &errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// unavailableError is the UNAVAILABLE status of a call that a FAIL_CLOSED
// policy refused because the store failed.
func unavailableError(down []limiter.Outcome) error {
	names := make([]string, 0, len(down))
	for _, d := range down {
		names = append(names, strconv.Quote(d.Policy))
	}
	st := status.Newf(codes.Unavailable, "gatehouse: the quota store is unavailable and policy %s fails closed", strings.Join(names, ", "))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}); err == nil {
		st = d
	}
	return st.Err()
}

// enforcing returns the names of the enforcing (non-shadow) policies that
// decided, as Headers lists them; nil when there are none.
func enforcing(v limiter.Verdict) []string {
	var names []string
	for _, o := range v.Outcomes {
		if !o.Shadow && !o.Unavailable {
			names = append(names, o.Policy)
		}
	}
	return names
}

// Headers returns the RateLimit-Policy and RateLimit headers of a verdict:
// one list item per enforcing (non-shadow) policy that decided.
func Headers(v limiter.Verdict) metadata.MD {
	// Both values are built in one buffer (a call's headers are on its
	// path): policies first, then the limits.
	var b []byte
	n := 0
	for _, o := range v.Outcomes {
		if o.Shadow || o.Unavailable {
			continue // a shadow policy, or a fail-closed one with no answer
		}
		if n > 0 {
			b = append(b, ", "...)
		}
		n++
		b = strconv.AppendQuote(b, o.Policy)
		b = append(b, ";q="...)
		b = strconv.AppendUint(b, o.Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, max(ceilSeconds(o.Window), 1), 10)
	}
	if n == 0 {
		return metadata.MD{}
	}
	split := len(b)
	n = 0
	for _, o := range v.Outcomes {
		if o.Shadow || o.Unavailable {
			continue
		}
		if n > 0 {
			b = append(b, ", "...)
		}
		n++
		t := o.ResetAfter
		if !o.Allowed {
			t = o.RetryAfter
		}
		b = strconv.AppendQuote(b, o.Policy)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, max(o.Remaining, 0), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(t), 10)
	}
	s := string(b)
	return metadata.MD{HeaderPolicy: {s[:split]}, HeaderRateLimit: {s[split:]}}
}

// retryAfter is the longest wait among refused outcomes: the call passes
// only when every policy allows it.
func retryAfter(refused []limiter.Outcome) time.Duration {
	var w time.Duration
	for _, r := range refused {
		w = max(w, r.RetryAfter)
	}
	return w
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// principal turns the authenticated principal into what policies see, as
// interceptors/auth's rules see it: an API key principal (credential
// "apikey:<set>") has the key's id as subject and api_key, and its labels
// as claims and labels; other principals have no api_key and no labels.
func principal(p callinfo.Principal) limiter.Principal {
	out := limiter.Principal{Subject: p.Subject, Claims: p.Claims}
	if strings.HasPrefix(p.Credential, "apikey:") {
		out.APIKey = p.Subject
		out.Labels = make(map[string]string, len(p.Claims))
		for k, v := range p.Claims {
			if s, ok := v.(string); ok {
				out.Labels[k] = s
			}
		}
	}
	return out
}
