package edge

import (
	"reflect"
	"testing"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/routing"
)

// No client can set the gateway's identity keys through a REST header, in
// any of the forms grpc-gateway knows.
func TestIncomingHeaderDropsIdentity(t *testing.T) {
	for _, h := range []string{
		"X-Gatehouse-Subject", "x-gatehouse-subject",
		"Grpc-Metadata-X-Gatehouse-Subject", "grpc-metadata-x-gatehouse-subject",
		"Grpc-Metadata-X-Gatehouse-Claims-Scope", "X-Gatehouse-Tls-Verified",
		"Grpc-Metadata-X-Gatehouse-Tls-Uri-San", "X-Gatehouse-Http-Path",
	} {
		if k, ok := incomingHeader(h); ok {
			t.Errorf("%s forwarded as %q", h, k)
		}
	}
	if k, ok := incomingHeader("Authorization"); !ok || k != "authorization" {
		t.Errorf("authorization: %q %v", k, ok)
	}
}

func TestIdentityActions(t *testing.T) {
	base := &routing.MetadataActions{
		Remove: []string{"x-debug"},
		Set:    []routing.KeyValue{{Key: "x-gatehouse-subject", Value: "route-set"}, {Key: "x-env", Value: "prod"}, {Key: "authorization", Value: "Bearer static"}},
		Add:    []routing.KeyValue{{Key: "x-gatehouse-claims-role", Value: "admin"}, {Key: "x-tag", Value: "a"}},
	}
	f := auth.Forward{
		Route:        "r",
		Remove:       []string{"authorization"},
		Set:          [][2]string{{"x-gatehouse-subject", "alice"}},
		IdentityKeys: []string{"x-gatehouse-subject", "x-gatehouse-credential", "x-gatehouse-claims-"},
	}
	got := identityActions(base, f)
	want := &routing.MetadataActions{
		Remove: []string{"x-debug", "authorization"},
		Set:    []routing.KeyValue{{Key: "x-env", Value: "prod"}, {Key: "x-gatehouse-subject", Value: "alice"}},
		Add:    []routing.KeyValue{{Key: "x-tag", Value: "a"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if len(base.Set) != 3 || len(base.Add) != 2 {
		t.Error("the route's shared actions were modified")
	}
}

func TestBackendServerName(t *testing.T) {
	b := &configv1.Backend{Endpoints: []string{"orders.internal:9001", "orders.internal:9002"}, Tls: &configv1.BackendTls{}}
	if n := backendServerName(b); n != "orders.internal" {
		t.Errorf("common host: %q", n)
	}
	b.Tls.ServerName = "orders.example"
	if n := backendServerName(b); n != "orders.example" {
		t.Errorf("server_name: %q", n)
	}
}
