package config

import (
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/internal/authcel"
	"github.com/gatehouse-dev/gatehouse/tlsconfig"
)

// mtlsCredential is the credential name of a verified client certificate
// in routes' auth.require.
const mtlsCredential = "mtls"

// noneCredential, alone in a route's auth.require, makes the route public
// on purpose: a require_auth listener serves it.
const noneCredential = "none"

// metadataKeyRE is a lower-case metadata key (or HTTP header) name.
var metadataKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// checkAuth checks TLS, authentication and routes' auth blocks beyond their
// fields' own rules. Whether files exist is checked when the gateway starts
// (the error names the field), so that a config can be validated away from
// the machine that serves it.
func (c checker) checkAuth(cfg *configv1.Config) {
	verifiesClients := false
	for i, l := range cfg.GetListeners() {
		if c.listenerTLS(path{}.field("listeners").index(i).field("tls"), l.GetTls()) {
			verifiesClients = true
		}
	}
	adminVerifiesClients := c.listenerTLS(path{}.field("admin").field("tls"), cfg.GetAdmin().GetTls())
	for i, b := range cfg.GetBackends() {
		t := b.GetTls()
		if t == nil {
			continue
		}
		p := path{}.field("backends").index(i).field("tls")
		c.fileRef(p.field("ca_file"), t.GetCaFile())
		c.fileRef(p.field("client_cert_file"), t.GetClientCertFile())
		c.fileRef(p.field("client_key_file"), t.GetClientKeyFile())
		if (t.GetClientCertFile() == "") != (t.GetClientKeyFile() == "") {
			c.errorf(p.field("client_cert_file"), "give both client_cert_file and client_key_file, or neither")
		}
		if t.GetServerName() == "" {
			hosts := map[string]bool{}
			for _, ep := range b.GetEndpoints() {
				if h, _, err := net.SplitHostPort(ep); err == nil {
					hosts[h] = true
				}
			}
			if len(hosts) > 1 {
				c.errorf(p.field("server_name"), "required when the endpoints have different hosts")
			}
		}
	}

	names := map[string]string{} // credential name -> its field path
	ac := cfg.GetAuthentication()
	credName := func(p path, name string) {
		switch name {
		case mtlsCredential:
			c.errorf(p, "%q is reserved for client certificates", name)
			return
		case noneCredential:
			c.errorf(p, "%q is reserved for routes that require no credential", name)
			return
		}
		if prev, dup := names[name]; dup {
			c.errorf(p, "duplicate credential name %q, also %s", name, prev)
			return
		}
		names[name] = p.String()
	}
	for i, j := range ac.GetJwt() {
		p := path{}.field("authentication").field("jwt").index(i)
		credName(p.field("name"), j.GetName())
		switch {
		case j.GetJwksUri() == "" && j.GetJwksFile() == "":
			c.errorf(p.field("jwks_uri"), "required (or give jwks_file)")
		case j.GetJwksUri() != "" && j.GetJwksFile() != "":
			c.errorf(p.field("jwks_file"), "only one of jwks_uri and jwks_file may be given")
		case j.GetJwksUri() != "":
			c.jwksURI(p.field("jwks_uri"), j.GetJwksUri())
		default:
			c.fileRef(p.field("jwks_file"), j.GetJwksFile())
		}
		if f := j.GetFrom(); f != nil {
			switch {
			case f.GetHeader() != "" && f.GetQuery() != "":
				c.errorf(p.field("from").field("query"), "only one of header and query may be given")
			case f.GetHeader() == "" && f.GetQuery() == "":
				c.errorf(p.field("from"), "give header or query")
			case f.GetHeader() != "" && !metadataKeyRE.MatchString(strings.ToLower(f.GetHeader())):
				c.errorf(p.field("from").field("header"), "want a header name")
			}
		}
	}
	for i, k := range ac.GetApiKeys() {
		p := path{}.field("authentication").field("api_keys").index(i)
		credName(p.field("name"), k.GetName())
		if k.GetKeysFile() == "" && len(k.GetKeys()) == 0 {
			c.errorf(p.field("keys_file"), "required (or give keys)")
		}
		c.fileRef(p.field("keys_file"), k.GetKeysFile())
		if h := k.GetHeader(); h != "" && !metadataKeyRE.MatchString(strings.ToLower(h)) {
			c.errorf(p.field("header"), "want a header name")
		}
		ids := map[string]int{}
		for j, key := range k.GetKeys() {
			if prev, dup := ids[key.GetId()]; dup {
				c.errorf(p.field("keys").index(j).field("id"), "duplicate id %q, also keys[%d]", key.GetId(), prev)
			}
			ids[key.GetId()] = j
		}
	}
	for i, tp := range ac.GetTrustedProxies() {
		p := path{}.field("authentication").field("trusted_proxies").index(i)
		if _, err := netip.ParsePrefix(tp); err != nil {
			c.errorf(p, "want a CIDR such as 10.0.0.0/8")
		}
	}
	c.checkIdentity(cfg)

	ap := path{}.field("admin").field("auth")
	for j, name := range cfg.GetAdmin().GetAuth().GetRequire() {
		switch _, ok := names[name]; {
		case name == noneCredential:
			c.errorf(ap.field("require").index(j), "%q would leave the admin API open: name a credential, or remove admin.auth", name)
		case name == mtlsCredential:
			if !adminVerifiesClients {
				c.errorf(ap.field("require").index(j), "admin.tls does not verify client certificates (client_ca_file), so mtls never holds")
			}
		case !ok:
			c.errorf(ap.field("require").index(j), "unknown credential %q (authentication.jwt, authentication.api_keys or mtls)", name)
		}
	}
	for j, rule := range cfg.GetAdmin().GetAuth().GetRules() {
		if _, err := authcel.Compile(rule); err != nil {
			c.errorf(ap.field("rules").index(j), "%s", strings.Join(strings.Fields(err.Error()), " "))
		}
	}
	for i, r := range cfg.GetRoutes() {
		ra := r.GetAuth()
		if ra == nil {
			continue
		}
		p := path{}.field("routes").index(i).field("auth")
		for j, name := range ra.GetRequire() {
			switch _, ok := names[name]; {
			case name == noneCredential:
				if len(ra.GetRequire()) > 1 {
					c.errorf(p.field("require").index(j), "%q must be alone: a route requires no credential, or some", name)
				}
				if len(ra.GetForwardClaims()) > 0 {
					c.errorf(p.field("forward_claims"), "a route that requires %q has no claims to forward", name)
				}
			case name == mtlsCredential:
				if !verifiesClients {
					c.errorf(p.field("require").index(j), "no listener verifies client certificates (tls.client_ca_file), so mtls never holds")
				}
			case !ok:
				c.errorf(p.field("require").index(j), "unknown credential %q (authentication.jwt, authentication.api_keys, mtls or none)", name)
			}
		}
		for j, rule := range ra.GetRules() {
			if _, err := authcel.Compile(rule); err != nil {
				c.errorf(p.field("rules").index(j), "%s", strings.Join(strings.Fields(err.Error()), " "))
			}
		}
		for j, claim := range ra.GetForwardClaims() {
			if !metadataKeyRE.MatchString(claim) {
				c.errorf(p.field("forward_claims").index(j), "want a lower-case claim name of letters, digits, \"-\", \"_\" and \".\"")
			}
		}
	}
}

// listenerTLS checks a listener's (or the admin listener's) tls block at p
// and says whether it verifies client certificates.
func (c checker) listenerTLS(p path, t *configv1.ListenerTls) bool {
	if t == nil {
		return false
	}
	c.fileRef(p.field("cert_file"), t.GetCertFile())
	c.fileRef(p.field("key_file"), t.GetKeyFile())
	c.fileRef(p.field("client_ca_file"), t.GetClientCaFile())
	mode := t.GetClientAuth()
	switch {
	case (mode == "VERIFY_IF_GIVEN" || mode == "REQUIRE_AND_VERIFY") && t.GetClientCaFile() == "":
		c.errorf(p.field("client_ca_file"), "required with client_auth %s", mode)
	case (mode == "" || mode == "NO_CLIENT_CERT") && t.GetClientCaFile() != "":
		c.errorf(p.field("client_auth"), "client_ca_file is given but client certificates are not asked for: set VERIFY_IF_GIVEN or REQUIRE_AND_VERIFY")
	case t.GetClientCaFile() != "":
		return true
	}
	return false
}

// Defaults of the identity keys (edge/auth.go has the same).
const (
	defaultSubjectKey    = "x-gatehouse-subject"
	defaultCredentialKey = "x-gatehouse-credential"
	defaultClaimsPrefix  = "x-gatehouse-claims-"
	defaultJWTKey        = "x-gatehouse-jwt"
)

// notIdentity are metadata keys the gateway or gRPC itself needs from the
// client or sets for itself: an identity key, which the gateway strips from
// every inbound call, must never cover one of them.
var notIdentity = []string{
	"x-gatehouse-http-method", "x-gatehouse-http-path", "x-gatehouse-http-query",
	"x-gatehouse-tls-uri-san", "x-gatehouse-tls-dns-san", "x-gatehouse-tls-verified",
	"x-forwarded-for", "x-forwarded-host", "x-request-id", "traceparent", "tracestate", "baggage",
	"content-type", "user-agent", "te", "host", "connection",
}

// checkIdentity checks authentication.identity and internal_jwt: the keys
// the gateway sets for backends, and strips from every inbound call, must
// be distinct and must not be keys that carry credentials or that the
// gateway or gRPC needs.
func (c checker) checkIdentity(cfg *configv1.Config) {
	ac := cfg.GetAuthentication()
	base := path{}.field("authentication")
	type key struct {
		p      path
		name   string
		prefix bool
	}
	id := ac.GetIdentity()
	keys := []key{
		{base.field("identity").field("subject_header"), orDefault(id.GetSubjectHeader(), defaultSubjectKey), false},
		{base.field("identity").field("credential_header"), orDefault(id.GetCredentialHeader(), defaultCredentialKey), false},
		{base.field("identity").field("claims_prefix"), orDefault(id.GetClaimsPrefix(), defaultClaimsPrefix), true},
	}
	if ij := ac.GetInternalJwt(); ij != nil {
		p := base.field("internal_jwt")
		keys = append(keys, key{p.field("header"), orDefault(ij.GetHeader(), defaultJWTKey), false})
		c.fileRef(p.field("signing_key_file"), ij.GetSigningKeyFile())
		if ij.GetAudience() == "" {
			c.errorf(p.field("audience"), "required: backends check it, so that a token minted for them is accepted nowhere else")
		}
	}
	// Credential carriers: an identity key with their name would strip the
	// credential before it is checked.
	carriers := map[string]string{}
	for i, j := range ac.GetJwt() {
		h := strings.ToLower(j.GetFrom().GetHeader())
		if h == "" && j.GetFrom().GetQuery() == "" {
			h = "authorization"
		}
		if h != "" {
			carriers[h] = base.field("jwt").index(i).String()
		}
	}
	for i, k := range ac.GetApiKeys() {
		carriers[strings.ToLower(orDefault(k.GetHeader(), "x-api-key"))] = base.field("api_keys").index(i).String()
	}
	covers := func(k key, name string) bool {
		if k.prefix {
			return strings.HasPrefix(name, k.name)
		}
		return name == k.name
	}
	for i, k := range keys {
		switch {
		case k.prefix && !strings.HasSuffix(k.name, "-"):
			c.errorf(k.p, "want a prefix that ends in \"-\", such as x-claims-")
			continue
		case !k.prefix && strings.HasSuffix(k.name, "-bin"):
			c.errorf(k.p, "a -bin key carries binary values; want a text key")
			continue
		case strings.HasPrefix(k.name, "grpc-"):
			c.errorf(k.p, "grpc-* keys are gRPC's own")
			continue
		}
		for _, n := range notIdentity {
			if covers(k, n) {
				c.errorf(k.p, "%q would strip %s from every call, which the gateway needs", k.name, n)
				break
			}
		}
		for carrier, from := range carriers {
			if covers(k, carrier) {
				c.errorf(k.p, "%q would strip the credential that %s reads from %s", k.name, from, carrier)
			}
		}
		for _, prev := range keys[:i] {
			if covers(k, prev.name) || covers(prev, k.name) {
				c.errorf(k.p, "%q overlaps %s (%q)", k.name, prev.p, prev.name)
			}
		}
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// fileRef checks a field that names a file or an environment variable
// ("${NAME}"): never the secret itself.
func (c checker) fileRef(p path, v string) {
	if v == "" || tlsconfig.IsEnvRef(v) {
		return
	}
	if strings.Contains(v, "-----BEGIN") || strings.Contains(v, "\n") {
		c.errorf(p, "give a file path or ${ENV_VAR}, never the certificate or key inline")
		return
	}
	if strings.Contains(v, "${") {
		c.errorf(p, "want a file path or exactly ${ENV_VAR}")
	}
}

// jwksURI checks a JWKS URL: https, or http to a loopback host.
func (c checker) jwksURI(p path, v string) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		c.errorf(p, "want an https URL")
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			c.errorf(p, "want https (http only to a loopback host)")
		}
	default:
		c.errorf(p, "want an https URL")
	}
}
