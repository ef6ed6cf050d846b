package config

import (
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/internal/authcel"
)

// mtlsCredential is the credential name of a verified client certificate
// in routes' auth.require.
const mtlsCredential = "mtls"

// metadataKeyRE is a lower-case metadata key (or HTTP header) name.
var metadataKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// envRefRE is a secret given as "${ENV_VAR}".
var envRefRE = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*\}$`)

// checkAuth checks TLS, authentication and routes' auth blocks beyond their
// fields' own rules. Whether files exist is checked when the gateway starts
// (the error names the field), so that a config can be validated away from
// the machine that serves it.
func (c checker) checkAuth(cfg *configv1.Config) {
	verifiesClients := false
	for i, l := range cfg.GetListeners() {
		t := l.GetTls()
		if t == nil {
			continue
		}
		p := path{}.field("listeners").index(i).field("tls")
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
			verifiesClients = true
		}
	}
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
		if name == mtlsCredential {
			c.errorf(p, "%q is reserved for client certificates", name)
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
			continue
		}
		c.errorf(p, "trusted proxies are not supported yet: the gateway trusts no x-forwarded-for hop (a call's source is its TCP peer)")
	}

	for i, r := range cfg.GetRoutes() {
		ra := r.GetAuth()
		if ra == nil {
			continue
		}
		p := path{}.field("routes").index(i).field("auth")
		for j, name := range ra.GetRequire() {
			switch _, ok := names[name]; {
			case name == mtlsCredential:
				if !verifiesClients {
					c.errorf(p.field("require").index(j), "no listener verifies client certificates (tls.client_ca_file), so mtls never holds")
				}
			case !ok:
				c.errorf(p.field("require").index(j), "unknown credential %q (authentication.jwt, authentication.api_keys or mtls)", name)
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

// fileRef checks a field that names a file or an environment variable
// ("${NAME}"): never the secret itself.
func (c checker) fileRef(p path, v string) {
	if v == "" || envRefRE.MatchString(v) {
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
