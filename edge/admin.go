package edge

import (
	"context"
	"encoding/json"
	"net/netip"
	"net/url"
	"strings"

	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/upstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// adminService implements the admin API over the running gateway.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	g *Gateway
}

// ListRoutes returns the routes in force, in match order.
func (a *adminService) ListRoutes(context.Context, *adminv1.ListRoutesRequest) (*adminv1.ListRoutesResponse, error) {
	resp := &adminv1.ListRoutesResponse{}
	for _, r := range a.g.router.Table().Routes() {
		resp.Routes = append(resp.Routes, &adminv1.Route{
			Name:    r.Name,
			Index:   int32(r.Index),
			Match:   r.String(),
			Backend: r.Backend,
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
