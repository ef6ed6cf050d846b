package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"github.com/gatehouse-dev/gatehouse/config"
	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/upstream"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Gateway is one running Gatehouse: its listeners, admin listener, router and
// backend pool, built from one Config.
type Gateway struct {
	cfg  *configv1.Config
	opts options
	log  *slog.Logger

	pool   *upstream.Pool
	router *routing.Router
	health *drainingHealth
	codec  *routing.Codec
	// validator checks protovalidate rules; built once, it caches the
	// compiled rules of every message type it has seen.
	validator protovalidate.Validator

	servers   []*server // client listeners
	directors []*routing.Director
	admin     *server // nil when admin is off

	stopHealth context.CancelFunc
	healthDone chan struct{}

	reload reloadState    // the config in force and reload stats (reload.go)
	obs    *observability // metrics, tracing and audit trail (telemetry.go)
	watch  *watcher       // the config file watcher; nil when off (watch.go)
	schema schemaState    // runtime schemas: REST, validation, reflection, OpenAPI (schema.go)
	quota  *quotaState    // rate limits and quotas; nil when none (quota.go)
	auth   *authState     // authentication and route auth blocks (auth.go)
	tls    *backendCreds  // TLS to backends, per backend (tls.go)

	mu       sync.Mutex
	started  bool
	serveErr chan error
	closed   bool
}

// New builds a Gateway from a loaded, validated config. It binds nothing
// and dials nothing yet; Start does.
func New(cfg *configv1.Config, opts ...Option) (*Gateway, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	table, err := routing.NewTable(cfg.GetRoutes())
	if err != nil {
		return nil, err
	}
	specs := backendSpecs(cfg) // reload.go: one place turns config into specs
	obs, err := newObservability(cfg, o)
	if err != nil {
		return nil, err
	}
	btls, err := newBackendCreds(cfg) // tls.go
	if err != nil {
		obs.shutdown(context.Background())
		return nil, err
	}
	pool, err := upstream.New(specs, append(append(obs.upstreamOptions(), upstream.WithTransportCredentials(btls)), o.upstream...)...)
	if err != nil {
		obs.shutdown(context.Background())
		return nil, err
	}
	obs.watchPool(pool)
	validator, err := protovalidate.New()
	if err != nil {
		pool.Close()
		return nil, err
	}
	qs, err := newQuotaState(cfg, o, obs.metrics) // quota.go
	if err != nil {
		pool.Close()
		obs.shutdown(context.Background())
		return nil, err
	}
	as, err := newAuthState(cfg, o, obs.metrics) // auth.go
	if err != nil {
		pool.Close()
		qs.close()
		obs.shutdown(context.Background())
		return nil, err
	}
	g := &Gateway{
		auth:      as,
		tls:       btls,
		validator: validator,
		cfg:       cfg,
		opts:      o,
		log:       o.logger,
		pool:      pool,
		router:    routing.NewRouter(table, pool),
		health:    newDrainingHealth(),
		codec:     routing.NewCodec(),
		obs:       obs,
		quota:     qs,
	}
	// Not serving until the backends are known to be reachable.
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	g.initReload(cfg)
	g.initSchemas(cfg)
	obs.audit.useRequestTypes(g.requestType) // audit.go: captures of runtime-schema methods
	return g, nil
}

// Router returns the gateway's router (for tests and the admin API).
func (g *Gateway) Router() *routing.Router { return g.router }

// Start binds every listener, starts serving on each and starts watching
// backend health. It returns once all addresses are bound; serving errors are
// reported by Wait.
func (g *Gateway) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		return errors.New("gatehouse: gateway already started")
	}
	g.started = true

	var bound []net.Listener
	fail := func(err error) error {
		for _, l := range bound {
			_ = l.Close()
		}
		// Servers built so far serve their in-process listener already.
		for _, s := range append(g.servers, g.admin) {
			if s != nil {
				s.stop()
			}
		}
		g.servers, g.admin = nil, nil
		g.pool.Close()
		return err
	}
	lc := net.ListenConfig{}
	for i, l := range g.cfg.GetListeners() {
		lis, err := lc.Listen(ctx, "tcp", l.GetAddress())
		if err != nil {
			return fail(fmt.Errorf("listeners[%d] %q: %w", i, l.GetName(), err))
		}
		bound = append(bound, lis)
		s, err := g.newEdgeServer(ctx, l, lis)
		if err != nil {
			return fail(fmt.Errorf("listeners[%d] %q: %w", i, l.GetName(), err))
		}
		g.servers = append(g.servers, s)
	}
	if a := g.cfg.GetAdmin(); a != nil {
		lis, err := lc.Listen(ctx, "tcp", a.GetAddress())
		if err != nil {
			return fail(fmt.Errorf("admin: %w", err))
		}
		bound = append(bound, lis)
		s, err := g.newAdminServer(ctx, lis)
		if err != nil {
			return fail(fmt.Errorf("admin: %w", err))
		}
		g.admin = s
	}

	g.pool.Connect()
	g.startSchemas(ctx) // schema.go: REST routes of the runtime schemas
	hctx, cancel := context.WithCancel(context.Background())
	g.stopHealth = cancel
	g.healthDone = make(chan struct{})
	go g.watchHealth(hctx)
	g.startWatch()

	all := g.allServers()
	g.serveErr = make(chan error, len(all))
	for _, s := range all {
		go func() {
			if err := s.serve(); err != nil {
				g.serveErr <- fmt.Errorf("listener %q: %w", s.name, err)
			}
		}()
		g.log.Info("listening", "listener", s.name, "address", s.lis.Addr().String(), "protocol", s.protocol)
	}
	return nil
}

func (g *Gateway) allServers() []*server {
	all := append([]*server(nil), g.servers...)
	if g.admin != nil {
		all = append(all, g.admin)
	}
	return all
}

// Addr returns the bound address of the listener with the given name, or of
// the admin listener for "admin"; nil before Start or for an unknown name.
func (g *Gateway) Addr(name string) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if name == "admin" && g.admin != nil {
		return g.admin.lis.Addr()
	}
	for _, s := range g.servers {
		if s.name == name {
			return s.lis.Addr()
		}
	}
	return nil
}

// Wait blocks until a listener fails or ctx ends, and returns the failure.
func (g *Gateway) Wait(ctx context.Context) error {
	select {
	case err := <-g.serveErr:
		return err
	case <-ctx.Done():
		return nil
	}
}

// Shutdown drains the gateway: health turns NOT_SERVING first, then every
// listener stops accepting and in-flight calls finish until ctx ends; what is
// left then is closed, and the backend pool is closed last.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	started := g.started
	g.mu.Unlock()

	g.health.drain()  // every status NOT_SERVING, Watch streams end: readiness turns false first
	g.drainDelay(ctx) // shed.go: let probes and balancers see it first
	g.stopWatch()     // no reload while draining
	if started {
		var wg sync.WaitGroup
		// Client listeners first, so that the admin listener keeps answering
		// readiness probes while they drain.
		for _, s := range g.servers {
			wg.Go(func() { s.shutdown(ctx) })
		}
		wg.Wait()
		if g.admin != nil {
			g.admin.shutdown(ctx)
		}
		if g.stopHealth != nil {
			g.stopHealth()
			<-g.healthDone
		}
	}
	for _, d := range g.directors {
		d.Close() // mirror calls still in flight end now
	}
	g.obs.shutdown(ctx) // after the drain: every call's audit record is in
	g.closeSchemas()
	g.quota.close() // after the drain: no call asks Redis any more
	g.auth.close()  // JWKS fetches
	g.pool.Close()
	return nil
}

// ShutdownGrace is the configured drain period.
func (g *Gateway) ShutdownGrace() time.Duration { return config.ShutdownGrace(g.Config()) }

// newGRPCServer makes a grpc.Server with the listener's limits, the
// interceptor chain and the raw-frame codec. When proxy is true, methods it
// does not serve go to the director. lc is the client listener (nil for the
// admin listener); extra server options come last.
func (g *Gateway) newGRPCServer(l config.Limits, proxy bool, lc *configv1.Listener, extra ...grpc.ServerOption) *grpc.Server {
	var shed *shedder // shed.go: client listeners' call cap, early in the chain
	if proxy {
		shed = newShedder(l.MaxConcurrentCalls)
	}
	opts := grpcServerOptions(l)
	opts = append(opts,
		grpc.ForceServerCodecV2(g.codec),
		grpc.ChainStreamInterceptor(g.streamChain(lc, shed)...),
		grpc.ChainUnaryInterceptor(g.unaryChain(lc, shed)...),
	)
	opts = append(opts, extra...)
	if proxy {
		d := routing.NewDirector(g.withIdentity(g.withCallPolicies(g.router)), // auth.go, resilience.go
			append(g.identityStrip(), // ingress.go
				routing.WithCallOptions(grpc.MaxCallRecvMsgSize(l.MaxMessageBytes), grpc.MaxCallSendMsgSize(l.MaxMessageBytes)))...,
		)
		g.directors = append(g.directors, d)
		opts = append(opts, grpc.UnknownServiceHandler(d.Handler))
		opts = append(opts, g.obs.serverOptions()...)
	}
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, g.health)
	return s
}

// newEdgeServer builds the server of one client listener.
func (g *Gateway) newEdgeServer(ctx context.Context, l *configv1.Listener, lis net.Listener) (*server, error) {
	limits := config.ListenerLimits(l)
	s := &server{name: l.GetName(), protocol: l.GetProtocol(), lis: lis}
	if s.protocol == "" {
		s.protocol = protocolShared
	}
	ts, err := g.listenerTLS(l) // tls.go
	if err != nil {
		return nil, err
	}
	// On a shared listener, gRPC clients' HTTP/2 connections go to the
	// grpc.Server's native transport (h2csplit.go), TLS ones with their
	// handshake done.
	native := s.protocol != protocolGRPC && l.GetGrpcConnections() != grpcConnectionsHTTP
	extra := grpcTLSOptions(ts, s.protocol, g.rapidResetGuard(s.name))
	if native && ts != nil {
		extra = append(extra, grpc.Creds(handshakenCreds{}))
	}
	s.grpc = g.newGRPCServer(limits, true, l, extra...)
	g.registerReflection(s.grpc, true)
	if s.protocol == protocolGRPC {
		return s, nil
	}
	if err := s.dialInProcess(limits.MaxMessageBytes); err != nil {
		return nil, err
	}
	rest, err := g.newRESTHandler(ctx, s.conn) // schema.go: compiled-in and runtime-schema routes
	if err != nil {
		s.stop()
		return nil, err
	}
	// A REST body slower than the deadline is 408 (listener.go).
	s.rest = bodyDeadline(limitBody(rest, int64(limits.MaxMessageBytes)), restBodyTimeoutFactor*limits.ReadHeaderTimeout)
	if s.browser, err = g.newBrowser(s.name, s, limits.MaxMessageBytes, s.rest); err != nil { // browser.go
		s.stop()
		return nil, err
	}
	s.http = newHTTPServer(s, limits)
	// The rapid-reset guard (h2guard.go) of the HTTP/2 connections net/http
	// serves, with grpc-go's keepalive policy, which net/http lacks.
	h2 := g.rapidResetGuard(s.name)
	h2.minPing = limits.KeepaliveMinPing
	h2.onPings = func(peer net.Addr) {
		g.log.Warn("HTTP/2 client pinged too often: GOAWAY ENHANCE_YOUR_CALM \"too_many_pings\", connection closed",
			"listener", s.name, "peer", fmt.Sprint(peer))
	}
	switch {
	case ts == nil:
		// Plaintext HTTP/1.1 is checked for request smuggling (h1guard.go),
		// which also keeps the write timeout, more cheaply than net/http's
		// WriteByteTimeout (which stays on TLS listeners). HTTP/2
		// prior-knowledge connections get the rapid-reset guard, as native
		// listeners do.
		inner := s.lis
		if native {
			s.split = newH2CSplit(s.lis, limits.ReadHeaderTimeout, limits.MaxHeaderBytes, g.rapidResetGuard(s.name))
			s.split.start()
			inner = s.split
		}
		s.lis = &h1Listener{Listener: inner, maxHeader: limits.MaxHeaderBytes + 4096, h2: h2,
			writeTimeout: limits.KeepaliveTimeout, onRefuse: func(addr net.Addr, err error) {
				g.log.Warn("refused an HTTP/1.1 request", "listener", s.name, "remote", addr.String(), "error", err)
			}}
		s.http.HTTP2.WriteByteTimeout = 0
	case native:
		// The split does the TLS handshake: HTTP/1.1 goes to net/http as a
		// *tls.Conn, HTTP/2 by its first request to the native transport
		// or to x/net's HTTP/2 server (net/http's own, unbundled), which
		// net/http's Shutdown sends GOAWAY (ConfigureServer).
		h2srv := &http2.Server{}
		if err := http2.ConfigureServer(s.http, h2srv); err != nil {
			s.stop()
			return nil, err
		}
		s.split = newH2CSplit(s.lis, limits.ReadHeaderTimeout, limits.MaxHeaderBytes, g.rapidResetGuard(s.name))
		s.split.tls = ts.Config()
		s.split.h2, s.split.h1, s.split.h2guard = h2srv, s.http, h2
		s.split.onTLSError = func(addr net.Addr, err error) {
			g.log.Debug("TLS handshake failed", "listener", s.name, "remote", addr.String(), "error", err)
		}
		s.split.start()
		s.lis = s.split
	default:
		serveTLS(s, ts) // tls.go
	}
	return s, nil
}

// newAdminServer builds the admin listener: health, reflection and the
// admin API over gRPC, and the admin API as REST; over TLS with admin.tls,
// and behind admin.auth when it is set (admin.go).
func (g *Gateway) newAdminServer(ctx context.Context, lis net.Listener) (*server, error) {
	limits := config.ListenerLimits(nil)
	s := &server{name: "admin", protocol: protocolShared, lis: lis}
	ts, err := g.adminTLS()
	if err != nil {
		return nil, err
	}
	guard, err := g.adminAuthOptions()
	if err != nil {
		return nil, err
	}
	s.grpc = g.newGRPCServer(limits, false, nil, guard...)
	adminv1.RegisterAdminServiceServer(s.grpc, &adminService{g: g})
	g.registerReflection(s.grpc, false)
	if err := s.dialInProcess(limits.MaxMessageBytes); err != nil {
		return nil, err
	}
	mux := newRESTMux()
	if err := adminv1.RegisterAdminServiceHandlerClient(ctx, mux, adminv1.NewAdminServiceClient(s.conn)); err != nil {
		return nil, err
	}
	if err := registerHealthRoutes(mux, healthpb.NewHealthClient(s.conn), g.pool.NotReady); err != nil {
		return nil, err
	}
	s.rest = guardAdminHTTP(g.adminHTTP(limitBody(mux, int64(limits.MaxMessageBytes))), mux, s.conn, len(guard) > 0) // /metrics, pprof: telemetry.go
	s.http = newHTTPServer(s, limits)
	serveTLS(s, ts) // tls.go
	return s, nil
}

// RESTRegistrar registers grpc-gateway handlers for compiled-in services on
// a listener's REST mux. conn reaches the listener's own grpc.Server, so the
// transcoded calls pass through the interceptor chain and the router like
// any native call. Generated RegisterXxxHandlerClient functions fit it with a
// one-line adapter.
type RESTRegistrar func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error

// discardLogger is a logger that writes nothing.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// updateHealth turns the pool's state into the health statuses: one entry
// per backend ("gatehouse.backend.<name>"), SERVING while it has a healthy
// endpoint, and the overall status "", which is the gateway's readiness.
// The overall status is NOT_SERVING only when nothing could be served: every
// backend that some route sends calls to (as its backend or a side of its
// split; a mirror's answers are never served) has no healthy endpoint. One
// dead backend, or one that no route uses, leaves it SERVING: taking every
// replica of the gateway out of its load balancer for it would turn one
// failing backend into a failure of every route (a cascading failure). The
// per-backend entries and /readyz's body say which backends are down.
// Draining turns everything NOT_SERVING for good (health.Server.Shutdown
// ignores later updates).
func (g *Gateway) updateHealth() {
	used := routedBackends(g.Config())
	anyUsed, anyUp := false, false
	for _, b := range g.pool.Backends() {
		up := b.State == connectivity.Ready
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if up {
			st = healthpb.HealthCheckResponse_SERVING
		}
		g.health.SetServingStatus(backendHealthPrefix+b.Name, st)
		if used[b.Name] {
			anyUsed = true
			anyUp = anyUp || up
		}
	}
	g.health.SetServingStatus("", overallHealth(anyUsed, anyUp))
}

// backendHealthPrefix starts the grpc.health.v1 service name of each
// backend's entry.
const backendHealthPrefix = "gatehouse.backend."

// overallHealth is the overall status: NOT_SERVING when routes use some
// backends and none of them is up. A config whose routes use no backend
// (only direct responses, or no routes) serves what it has.
func overallHealth(anyUsed, anyUp bool) healthpb.HealthCheckResponse_ServingStatus {
	if anyUsed && !anyUp {
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	return healthpb.HealthCheckResponse_SERVING
}

// routedBackends returns the names of the backends that cfg's routes send
// calls to: each route's backend and the sides of its split that have a
// weight. Mirrors are left out: their answers are discarded.
func routedBackends(cfg *configv1.Config) map[string]bool {
	used := make(map[string]bool)
	for _, r := range cfg.GetRoutes() {
		if b := r.GetBackend(); b != "" {
			used[b] = true
		}
		for _, s := range r.GetSplit() {
			if s.GetWeight() > 0 {
				used[s.GetBackend()] = true
			}
		}
	}
	return used
}

// watchHealth refreshes the health statuses from the backend pool until ctx
// ends.
func (g *Gateway) watchHealth(ctx context.Context) {
	defer close(g.healthDone)
	t := time.NewTicker(g.opts.healthInterval)
	defer t.Stop()
	for {
		g.updateHealth()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var _ http.Handler = (*server)(nil)
