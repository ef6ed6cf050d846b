package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// listenerTLS returns the TLS of a client listener, nil when it is
// plaintext. Its files are read now (an error names the field) and
// reloaded when they change. Shared listeners offer ALPN h2 and http/1.1,
// so that gRPC, gRPC-Web and REST share the port; grpc listeners offer h2.
func (g *Gateway) listenerTLS(l *configv1.Listener) (*tlsconfig.Server, error) {
	t := l.GetTls()
	if t == nil {
		return nil, nil
	}
	field := "listeners.tls"
	for i, c := range g.cfg.GetListeners() {
		if c == l {
			field = fmt.Sprintf("listeners[%d].tls", i)
		}
	}
	protos := []string{"h2", "http/1.1"}
	if l.GetProtocol() == protocolGRPC {
		protos = []string{"h2"}
	}
	return tlsconfig.NewServer(tlsconfig.ServerSpec{
		CertFile: t.GetCertFile(), KeyFile: t.GetKeyFile(),
		ClientCAFile: t.GetClientCaFile(), ClientAuth: t.GetClientAuth(),
		MinVersion: t.GetMinVersion(), Field: field,
	}, protos, tlsconfig.WithLogger(g.log))
}

// grpcTLSOptions are the grpc.Server options of a native grpc listener:
// its credentials (TLS, or plaintext when ts is nil) under the rapid-reset
// guard (h2guard.go); none for a shared listener, whose net/http server
// terminates TLS (its grpc.Server also serves the plaintext in-process
// connection).
func grpcTLSOptions(ts *tlsconfig.Server, protocol string, guard *h2Guard) []grpc.ServerOption {
	if protocol != protocolGRPC {
		return nil
	}
	var creds credentials.TransportCredentials // nil: plaintext
	if ts != nil {
		creds = credentials.NewTLS(ts.Config())
	}
	return []grpc.ServerOption{grpc.Creds(guard.creds(creds))}
}

// serveTLS makes a shared listener speak TLS: the listener is wrapped and
// the HTTP server offers HTTP/2 over TLS besides HTTP/1.1.
func serveTLS(s *server, ts *tlsconfig.Server) {
	if ts == nil || s.http == nil {
		return
	}
	cfg := ts.Config()
	s.http.TLSConfig = cfg
	if s.http.Protocols != nil {
		s.http.Protocols.SetHTTP2(true)
	}
	s.lis = tls.NewListener(s.lis, cfg)
}

// backendCreds secures each backend connection as its backend's tls block
// says: TLS for backends that have one, plaintext for the others. The pool
// dials each backend under the authority of its name, which picks the
// credentials. The map is replaced whole on reload.
type backendCreds struct {
	byName atomic.Pointer[map[string]backendTLS]
	plain  credentials.TransportCredentials
}

// backendTLS is one backend's credentials and the name its certificate is
// verified against (grpc-go's TLS credentials verify the authority they
// are given, which for a pooled connection is the backend's name).
type backendTLS struct {
	creds      credentials.TransportCredentials
	serverName string
}

var _ credentials.TransportCredentials = (*backendCreds)(nil)

// newBackendCreds builds the credentials of cfg's backends; files are read
// now and an error names the field.
func newBackendCreds(cfg *configv1.Config) (*backendCreds, error) {
	c := &backendCreds{plain: insecure.NewCredentials()}
	if err := c.update(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// update puts the backends' TLS of cfg in force for connections made from
// now on; on error nothing changes. Backends that cfg no longer has keep
// their credentials, for the connections they make while they drain.
func (c *backendCreds) update(cfg *configv1.Config) error {
	m := map[string]backendTLS{}
	if old := c.byName.Load(); old != nil {
		names := map[string]bool{}
		for _, b := range cfg.GetBackends() {
			names[b.GetName()] = true
		}
		for name, tc := range *old {
			if !names[name] {
				m[name] = tc
			}
		}
	}
	for i, b := range cfg.GetBackends() {
		t := b.GetTls()
		if t == nil {
			continue
		}
		name := backendServerName(b)
		tc, err := tlsconfig.NewClient(tlsconfig.ClientSpec{
			CAFile: t.GetCaFile(), ServerName: name,
			CertFile: t.GetClientCertFile(), KeyFile: t.GetClientKeyFile(),
			Field: fmt.Sprintf("backends[%d].tls", i),
		})
		if err != nil {
			return err
		}
		m[b.GetName()] = backendTLS{creds: credentials.NewTLS(tc), serverName: name}
	}
	c.byName.Store(&m)
	return nil
}

// backendServerName is the name a backend's certificate is verified
// against: server_name, else the host its endpoints share (the config
// checker requires server_name when they do not share one).
func backendServerName(b *configv1.Backend) string {
	if n := b.GetTls().GetServerName(); n != "" {
		return n
	}
	for _, ep := range b.GetEndpoints() {
		if h, _, err := net.SplitHostPort(ep); err == nil {
			return h
		}
	}
	return ""
}

func (c *backendCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if bt, ok := (*c.byName.Load())[authority]; ok {
		return bt.creds.ClientHandshake(ctx, bt.serverName, conn)
	}
	return c.plain.ClientHandshake(ctx, authority, conn)
}

func (c *backendCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("gatehouse: backend credentials are client-side only")
}

func (c *backendCreds) Info() credentials.ProtocolInfo { return c.plain.Info() }

func (c *backendCreds) Clone() credentials.TransportCredentials {
	n := &backendCreds{plain: c.plain}
	n.byName.Store(c.byName.Load())
	return n
}

//nolint:staticcheck // required by the interface
func (c *backendCreds) OverrideServerName(string) error { return nil }
