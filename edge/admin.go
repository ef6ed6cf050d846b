package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/tlsconfig"
	"github.com/gatehouse-dev/gatehouse/upstream"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// adminService implements the admin API over the running gateway.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	g *Gateway
}

// ListRoutes returns the routes in force, in match order. A route's
// backend is its backend's name, or what it does instead: a split, a
// direct response, and a mirror besides (routing.Route.Target).
func (a *adminService) ListRoutes(context.Context, *adminv1.ListRoutesRequest) (*adminv1.ListRoutesResponse, error) {
	resp := &adminv1.ListRoutesResponse{}
	for _, r := range a.g.router.Table().Routes() {
		resp.Routes = append(resp.Routes, &adminv1.Route{
			Name:    r.Name,
			Index:   int32(r.Index),
			Match:   r.String(),
			Backend: r.Target(),
		})
	}
	return resp, nil
}

// ListBackends returns every backend with its endpoints' state.
func (a *adminService) ListBackends(context.Context, *adminv1.ListBackendsRequest) (*adminv1.ListBackendsResponse, error) {
	resp := &adminv1.ListBackendsResponse{}
	for _, b := range a.g.pool.Backends() {
		resp.Backends = append(resp.Backends, backendProto(b))
	}
	return resp, nil
}

// GetBackend returns one backend by name, or NOT_FOUND.
func (a *adminService) GetBackend(_ context.Context, req *adminv1.GetBackendRequest) (*adminv1.GetBackendResponse, error) {
	for _, b := range a.g.pool.Backends() {
		if b.Name == req.GetName() {
			return &adminv1.GetBackendResponse{Backend: backendProto(b)}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "gatehouse: no backend named %q", req.GetName())
}

// Explain says which route a described call would take, and why each
// route before it was passed over.
func (a *adminService) Explain(_ context.Context, req *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error) {
	md := metadata.MD{}
	for k, v := range req.GetMetadata() {
		md[strings.ToLower(k)] = []string{v}
	}
	if req.GetAuthority() != "" {
		md[":authority"] = []string{req.GetAuthority()}
	}
	r := &routing.Request{
		Method:     req.GetMethod(),
		Metadata:   md,
		HTTPMethod: req.GetHttpMethod(),
		Path:       req.GetPath(),
	}
	if len(req.GetQuery()) > 0 {
		r.Query = url.Values{}
		for k, v := range req.GetQuery() {
			r.Query.Set(k, v)
		}
	}
	if ip := req.GetSourceIp(); ip != "" {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "source_ip: %v", err)
		}
		r.SourceIP = addr
	}
	if c := req.GetClaimsJson(); c != "" {
		if err := json.Unmarshal([]byte(c), &r.Claims); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "claims_json: %v", err)
		}
	}
	e := a.g.router.Explain(r)
	resp := &adminv1.ExplainResponse{}
	if e.Route != nil {
		resp.Route = e.Route.Name
		resp.Backend = e.Backend
		resp.Action = e.Route.Target()
	}
	for _, p := range e.PassedOver {
		resp.PassedOver = append(resp.PassedOver, &adminv1.PassedOver{Route: p.Route, Reason: p.Reason})
	}
	return resp, nil
}

func backendProto(b upstream.BackendState) *adminv1.Backend {
	out := &adminv1.Backend{Name: b.Name, State: b.State.String(), Reachable: b.State == connectivity.Ready}
	for _, e := range b.Endpoints {
		out.Endpoints = append(out.Endpoints, &adminv1.Endpoint{Address: e.Address, State: e.State.String()})
	}
	return out
}

// Admin listener protection (admin.tls and admin.auth).
//
// admin.auth is applied by the same auth interceptor as routes' auth blocks,
// over the authenticators of the authentication section: every admin RPC,
// native or REST (which enters the admin grpc.Server in process), is one
// call to check, as if the admin API were one route named "admin". The
// probes (grpc.health.v1, which /healthz and /readyz call) are exempt. The
// admin listener's plain HTTP endpoints (/metrics, /debug/pprof/) have no
// RPC of their own: each request first makes an in-process call to
// adminGateMethod, carrying the request's headers and client certificate
// as the REST path would, and is answered only when that call is allowed;
// a refusal is answered as a REST call's (401 with WWW-Authenticate, 403),
// with a google.rpc.Status body.

// adminRoute is the route name admin calls are checked, logged and counted
// under.
const adminRoute = "admin"

// adminGateMethod is the in-process call that checks a request to one of
// the admin listener's plain HTTP endpoints. No service implements it: the
// admin grpc.Server's unknown-service handler answers it (adminGate).
const adminGateMethod = "/gatehouse.admin.v1.AdminHTTP/Check"

// adminAuthPolicy compiles admin.auth; nil when the admin API is open. An
// error names the field.
func (g *Gateway) adminAuthPolicy() (*auth.Policy, error) {
	aa := g.cfg.GetAdmin().GetAuth()
	if aa == nil {
		return nil, nil
	}
	for i, name := range aa.GetRequire() {
		if name == auth.None {
			return nil, fmt.Errorf("admin.auth.require[%d]: %q would leave the admin API open", i, name)
		}
		if name == auth.MTLS && g.cfg.GetAdmin().GetTls().GetClientCaFile() == "" {
			return nil, fmt.Errorf("admin.auth.require[%d]: mtls needs admin.tls with client_ca_file, or no client certificate is ever verified", i)
		}
		if g.auth == nil || !g.auth.a.Has(name) {
			return nil, fmt.Errorf("admin.auth.require[%d]: unknown credential %q (authentication.jwt, authentication.api_keys or mtls)", i, name)
		}
	}
	p, err := auth.NewPolicy(auth.PolicySpec{Require: aa.GetRequire(), Rules: aa.GetRules()})
	if err != nil {
		return nil, fmt.Errorf("admin.auth: %w", err)
	}
	return p, nil
}

// adminAuthOptions are the admin grpc.Server's extra options under
// admin.auth: the auth interceptor (innermost, after the chain) and the
// handler of adminGateMethod. None when the admin API is open.
func (g *Gateway) adminAuthOptions() ([]grpc.ServerOption, error) {
	pol, err := g.adminAuthPolicy()
	if err != nil || pol == nil {
		return nil, err
	}
	routes := func(_ context.Context, fullMethod string, _ metadata.MD) (auth.Route, bool) {
		if exemptFromAuth(fullMethod) {
			return auth.Route{}, false // probes stay open
		}
		return auth.Route{Name: adminRoute, Policy: pol}, true
	}
	opts := []auth.Option{auth.WithIdentityKeys(g.auth.identity.subject, g.auth.identity.credential, g.auth.identity.claimsPrefix)}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(g.auth.a, routes, opts...)),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(g.auth.a, routes, opts...)),
		grpc.UnknownServiceHandler(adminGate),
	}, nil
}

// adminGate answers adminGateMethod, which the auth interceptor has let
// through, with an empty message; any other unknown method is
// UNIMPLEMENTED, as without the handler.
func adminGate(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	if method != adminGateMethod {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	var req emptypb.Empty
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	return ss.SendMsg(&emptypb.Empty{})
}

// guardAdminHTTP puts the admin listener's plain HTTP endpoints behind
// admin.auth: a request h's mux does not send to the REST mux ("/", whose
// calls the auth interceptor checks) first passes adminGateMethod over
// conn, annotated by rest as a REST call would be. h is returned unchanged
// when the admin API is open.
func guardAdminHTTP(h http.Handler, rest *runtime.ServeMux, conn grpc.ClientConnInterface, on bool) http.Handler {
	if !on {
		return h
	}
	mux, _ := h.(*http.ServeMux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mux != nil {
			if _, pattern := mux.Handler(r); pattern == "/" {
				h.ServeHTTP(w, r) // the REST mux: checked call by call
				return
			}
		}
		ctx, err := runtime.AnnotateContext(r.Context(), rest, r, adminGateMethod, runtime.WithHTTPPathPattern(r.URL.Path))
		if err == nil {
			err = conn.Invoke(ctx, adminGateMethod, &emptypb.Empty{}, &emptypb.Empty{})
		}
		if err != nil {
			_, m := runtime.MarshalerForRequest(rest, r)
			restError(ctx, rest, m, w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminTLS returns the admin listener's TLS (admin.tls), nil when it is
// plaintext; its files are reloaded when they change, as a client
// listener's.
func (g *Gateway) adminTLS() (*tlsconfig.Server, error) {
	t := g.cfg.GetAdmin().GetTls()
	if t == nil {
		return nil, nil
	}
	return tlsconfig.NewServer(tlsconfig.ServerSpec{
		CertFile: t.GetCertFile(), KeyFile: t.GetKeyFile(),
		ClientCAFile: t.GetClientCaFile(), ClientAuth: t.GetClientAuth(),
		MinVersion: t.GetMinVersion(), Field: "admin.tls",
	}, []string{"h2", "http/1.1"}, tlsconfig.WithLogger(g.log))
}
