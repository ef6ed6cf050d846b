package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// Metadata keys that the gateway's REST path sets on the in-process call
// for a client certificate the HTTP listener verified. They are trusted only
// on in-process calls (peer network "bufconn"): the REST header matcher
// drops client headers under "x-gatehouse-", and the director never
// forwards them.
const (
	// MDClientURISAN carries each URI SAN of the verified client certificate.
	MDClientURISAN = "x-gatehouse-tls-uri-san"
	// MDClientDNSSAN carries each DNS SAN of the verified client certificate.
	MDClientDNSSAN = "x-gatehouse-tls-dns-san"
	// MDClientVerified is "1" when the HTTP listener verified a client
	// certificate.
	MDClientVerified = "x-gatehouse-tls-verified"
	// mdHTTPQuery is the REST call's raw query (routing.MDHTTPQuery).
	mdHTTPQuery = "x-gatehouse-http-query"
)

// MTLS is the name routes' require lists use for a verified client
// certificate.
const MTLS = "mtls"

// tokenSource says where a credential is carried.
type tokenSource struct {
	header string // metadata key; "" when query
	bearer bool   // the header is authorization: take the Bearer credential
	query  string // URL query parameter (REST calls)
}

func newTokenSource(header, query string) (tokenSource, error) {
	switch {
	case header != "" && query != "":
		return tokenSource{}, errors.New("give one of from.header and from.query")
	case query != "":
		return tokenSource{query: query}, nil
	case header == "":
		header = "authorization"
	}
	header = strings.ToLower(header)
	return tokenSource{header: header, bearer: header == "authorization"}, nil
}

// errAmbiguous is the error of a credential given more than once with
// different values.
var errAmbiguous = errors.New("credential given more than once")

// extract returns the credential, "" when none is given. grpc-gateway
// forwards the Authorization header twice with the same value; distinct
// values are refused.
func (s tokenSource) extract(md metadata.MD, inProcess bool) (string, error) {
	var vals []string
	if s.query != "" {
		if !inProcess {
			return "", nil
		}
		raw := md[mdHTTPQuery]
		if len(raw) == 0 {
			return "", nil
		}
		q, err := url.ParseQuery(raw[0])
		if err != nil {
			return "", errors.New("malformed query")
		}
		vals = q[s.query]
	} else {
		vals = md[s.header]
	}
	tok := ""
	for _, v := range vals {
		if s.bearer {
			scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
			if !ok || !strings.EqualFold(scheme, "bearer") {
				continue // another scheme (Basic ...) is not ours
			}
			v = strings.TrimSpace(cred)
		}
		if v == "" {
			continue
		}
		if tok != "" && tok != v {
			return "", errAmbiguous
		}
		tok = v
	}
	return tok, nil
}

// carrier is the metadata key a source's credential arrives under, to strip
// before the call goes to the backend; "" for a query parameter.
func (s tokenSource) carrier() string { return s.header }

// inProcess reports whether the call arrived over the gateway's in-process
// connection (the REST path).
func inProcess(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == "bufconn"
}

// clientCert is the identity of a verified client certificate.
type clientCert struct {
	uris []string
	dns  []string
}

// subject is the certificate's identity: its SPIFFE ID, else its first URI
// SAN, else its first DNS SAN.
func (c *clientCert) subject() string {
	for _, u := range c.uris {
		if strings.HasPrefix(u, "spiffe://") {
			return u
		}
	}
	if len(c.uris) > 0 {
		return c.uris[0]
	}
	if len(c.dns) > 0 {
		return c.dns[0]
	}
	return ""
}

// peerCert returns the verified client certificate of the call: from the
// TLS handshake of a gRPC call, or, for a REST call, from the metadata the
// gateway's REST path set. Nil when there is none or it was not verified.
func peerCert(ctx context.Context, md metadata.MD, inProc bool) *clientCert {
	if inProc {
		if v := md[MDClientVerified]; len(v) != 1 || v[0] != "1" {
			return nil
		}
		return &clientCert{uris: md[MDClientURISAN], dns: md[MDClientDNSSAN]}
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return certIdentity(ti.State.VerifiedChains[0][0])
}

// certIdentity returns the SANs of a verified leaf certificate.
func certIdentity(leaf *x509.Certificate) *clientCert {
	c := &clientCert{dns: leaf.DNSNames}
	for _, u := range leaf.URIs {
		c.uris = append(c.uris, u.String())
	}
	return c
}

// CertMetadata returns the metadata the REST path sets for a verified
// client certificate (see MDClientVerified); nil for none.
func CertMetadata(verifiedChains [][]*x509.Certificate) metadata.MD {
	if len(verifiedChains) == 0 || len(verifiedChains[0]) == 0 {
		return nil
	}
	c := certIdentity(verifiedChains[0][0])
	md := metadata.Pairs(MDClientVerified, "1")
	for _, u := range c.uris {
		md.Append(MDClientURISAN, u)
	}
	for _, d := range c.dns {
		md.Append(MDClientDNSSAN, d)
	}
	return md
}

// peerIP is the client's address (callinfo.Source): the transport peer,
// or for REST calls the x-forwarded-for hop the gateway appended from the
// HTTP peer, walked back over the trusted proxies; "" when unknown.
func peerIP(ctx context.Context, md metadata.MD) string {
	if a := callinfo.SourceOf(ctx, md).Addr; a.IsValid() {
		return a.String()
	}
	return ""
}
