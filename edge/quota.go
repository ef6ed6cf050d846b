package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	iquota "github.com/gatehouse-dev/gatehouse/interceptors/quota"
	"github.com/gatehouse-dev/gatehouse/quota"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// WithQuotaOptions adds options to the quota limiter, for example a clock
// or a probe interval in tests.
func WithQuotaOptions(opts ...quota.Option) Option {
	return optionFunc(func(o *options) { o.quota = append(o.quota, opts...) })
}

// quotaState is the rate limits and quotas of the config's quota section:
// the limiter and, with a Redis store, its client. The section needs a
// restart to change (it is not among reload.go's liveFields).
type quotaState struct {
	limiter *quota.Limiter
	client  redis.UniversalClient // nil without a Redis store
}

// newQuotaState builds the limiter of cfg's quota section; nil when there
// are no policies. It connects nothing yet: go-redis dials on first use.
func newQuotaState(cfg *configv1.Config, o options, m *telemetry.Metrics) (*quotaState, error) {
	q := cfg.GetQuota()
	if len(q.GetPolicies()) == 0 {
		return nil, nil
	}
	policies := make([]quota.Policy, 0, len(q.GetPolicies()))
	for _, p := range q.GetPolicies() {
		policies = append(policies, quotaPolicy(p))
	}
	opts := []quota.Option{quota.WithLogger(o.logger)}
	if m != nil {
		qm, err := quota.NewMetrics(m.Registry())
		if err != nil {
			return nil, err
		}
		opts = append(opts, quota.WithMetrics(qm))
	}
	s := &quotaState{}
	var store quota.Store
	if r := q.GetStore().GetRedis(); r != nil {
		rc, err := redisConfig(r)
		if err != nil {
			return nil, err
		}
		s.client = quota.NewRedisClient(rc)
		store = quota.NewRedis(s.client)
		opts = append(opts, quota.WithTimeout(rc.Timeout))
	}
	l, err := quota.New(policies, store, q.GetReplicas(), append(opts, o.quota...)...)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("quota: %w", err)
	}
	s.limiter = l
	return s, nil
}

// quotaPolicy turns a configured policy into the limiter's.
func quotaPolicy(p *configv1.QuotaPolicy) quota.Policy {
	out := quota.Policy{
		Name:       p.GetName(),
		Key:        p.GetKey(),
		When:       p.GetWhen(),
		Routes:     p.GetRoutes(),
		FailClosed: p.GetOnStoreFailure() == "FAIL_CLOSED",
		Shadow:     p.GetShadow(),
	}
	if r := p.GetRate(); r != nil {
		out.Rate = &quota.Rate{Requests: r.GetRequests(), Per: r.GetPer().AsDuration(), Burst: r.GetBurst()}
	}
	if c := p.GetQuota(); c != nil {
		w := quota.Day
		if c.GetPer() == "MONTH" {
			w = quota.Month
		}
		out.Calendar = &quota.Calendar{Requests: c.GetRequests(), Per: w}
	}
	return out
}

// redisConfig turns the Redis store settings into a client config,
// reading the password from its environment variable or file.
func redisConfig(r *configv1.RedisStore) (quota.RedisConfig, error) {
	c := quota.RedisConfig{
		Addresses:  r.GetAddresses(),
		MasterName: r.GetMasterName(),
		Username:   r.GetUsername(),
		DB:         int(r.GetDb()),
		Timeout:    r.GetTimeout().AsDuration(),
	}
	if c.Timeout <= 0 {
		c.Timeout = quota.DefaultTimeout
	}
	if r.GetTls() {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch pw := r.GetPassword(); {
	case r.GetPasswordFile() != "":
		b, err := os.ReadFile(r.GetPasswordFile())
		if err != nil {
			return c, fmt.Errorf("quota.store.redis.password_file: %w", err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	case strings.HasPrefix(pw, "${") && strings.HasSuffix(pw, "}"):
		name := pw[2 : len(pw)-1]
		v, ok := os.LookupEnv(name)
		if !ok {
			return c, fmt.Errorf("quota.store.redis.password: environment variable %s is not set", name)
		}
		c.Password = v
	}
	return c, nil
}

// close closes the Redis client.
func (s *quotaState) close() {
	if s != nil && s.client != nil {
		_ = s.client.Close()
	}
}

// quotaOptions are the interceptors' options: routes come from the route
// table in force, the client IP as the router sees it.
func (g *Gateway) quotaOptions() []iquota.Option {
	return []iquota.Option{iquota.WithRoute(g.quotaRoute), iquota.WithSource(func(ctx context.Context, md metadata.MD) netip.Addr {
		return routing.RequestOf(ctx, "", md).SourceIP // the peer, or for REST the x-forwarded-for hop grpc-gateway appended
	})}
}

func (g *Gateway) quotaStream() []grpc.StreamServerInterceptor {
	if g.quota == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{iquota.StreamServerInterceptor(g.quota.limiter, g.quotaOptions()...)}
}

func (g *Gateway) quotaUnary() []grpc.UnaryServerInterceptor {
	if g.quota == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{iquota.UnaryServerInterceptor(g.quota.limiter, g.quotaOptions()...)}
}

// quotaRoute names the route that takes a call, from the table pinned to
// the call (routing.Router.Match): the route the auth layer approved and
// the director will use. The gateway's own services (health, reflection,
// admin) take no route.
func (g *Gateway) quotaRoute(ctx context.Context, fullMethod string, md metadata.MD) string {
	if ownService(fullMethod) {
		return ""
	}
	_, r, ok := g.router.Match(ctx, fullMethod, md)
	if !ok {
		return ""
	}
	return r.Name
}

// ownService reports whether the gateway itself serves a method.
func ownService(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.") ||
		strings.HasPrefix(fullMethod, "/gatehouse.admin.v1.")
}
