package config_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
)

const authBase = `
backends: [{name: b, endpoints: ["127.0.0.1:9001"]}]
`

func TestCheckAuth(t *testing.T) {
	const listener = "listeners: [{name: edge, address: \"127.0.0.1:8080\"}]\n"
	const jwt = `authentication: {jwt: [{name: corp, issuer: "https://id.example/", audiences: [g], jwks_uri: "https://id.example/jwks"}]}` + "\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown credential", listener + jwt + `routes: [{name: r, backend: b, auth: {require: [corp, nope]}}]`,
			`routes[0].auth.require[1]: unknown credential "nope"`},
		{"mtls without a verifying listener", listener + `routes: [{name: r, backend: b, auth: {require: [mtls]}}]`,
			`routes[0].auth.require[0]: no listener verifies client certificates`},
		{"rule that does not compile", listener + jwt + `routes: [{name: r, backend: b, auth: {require: [corp], rules: ['claims.scope +']}}]`,
			`routes[0].auth.rules[0]: `},
		{"rule that is not a bool", listener + jwt + `routes: [{name: r, backend: b, auth: {require: [corp], rules: ['method']}}]`,
			`routes[0].auth.rules[0]: the rule is of type string, want bool`},
		{"bad forward claim", listener + jwt + `routes: [{name: r, backend: b, auth: {require: [corp], forward_claims: ["Scope!"]}}]`,
			`routes[0].auth.forward_claims[0]: want a lower-case claim name`},
		{"jwks both", listener + `authentication: {jwt: [{name: corp, issuer: i, audiences: [g], jwks_uri: "https://x/j", jwks_file: j.json}]}`,
			`authentication.jwt[0].jwks_file: only one of jwks_uri and jwks_file`},
		{"jwks none", listener + `authentication: {jwt: [{name: corp, issuer: i, audiences: [g]}]}`,
			`authentication.jwt[0].jwks_uri: required (or give jwks_file)`},
		{"jwks over plain http", listener + `authentication: {jwt: [{name: corp, issuer: i, audiences: [g], jwks_uri: "http://id.example/jwks"}]}`,
			`authentication.jwt[0].jwks_uri: want https (http only to a loopback host)`},
		{"HMAC algorithm", listener + `authentication: {jwt: [{name: corp, issuer: i, audiences: [g], jwks_uri: "https://x/j", algorithms: [HS256]}]}`,
			`authentication.jwt[0].algorithms[0]`},
		{"duplicate credential name", listener + jwt[:len(jwt)-2] + `, api_keys: [{name: corp, keys_file: k.yaml}]}`,
			`authentication.api_keys[0].name: duplicate credential name "corp"`},
		{"reserved name", listener + `authentication: {api_keys: [{name: mtls, keys_file: k.yaml}]}`,
			`authentication.api_keys[0].name: "mtls" is reserved`},
		{"reserved name none", listener + `authentication: {api_keys: [{name: none, keys_file: k.yaml}]}`,
			`authentication.api_keys[0].name: "none" is reserved for routes that require no credential`},
		{"none with a credential", listener + jwt + `routes: [{name: r, backend: b, auth: {require: [corp, none]}}]`,
			`routes[0].auth.require[1]: "none" must be alone`},
		{"none with forward_claims", listener + `routes: [{name: r, backend: b, auth: {require: [none], forward_claims: [sub]}}]`,
			`routes[0].auth.forward_claims: a route that requires "none" has no claims to forward`},
		{"admin auth that requires none", listener + `admin: {address: "127.0.0.1:9090", auth: {require: [none]}}`,
			`admin.auth.require[0]: "none" would leave the admin API open`},
		{"keys file under an environment variable", listener + `authentication: {api_keys: [{name: p, keys_file: "${SECRETS}/keys.yaml"}]}`,
			`authentication.api_keys[0].keys_file: want a file path or exactly ${ENV_VAR}`},
		{"JWKS file under an environment variable", listener + `authentication: {jwt: [{name: corp, issuer: i, audiences: [g], jwks_file: "${DIR}/jwks.json"}]}`,
			`authentication.jwt[0].jwks_file: want a file path or exactly ${ENV_VAR}`},
		{"api keys without keys", listener + `authentication: {api_keys: [{name: p}]}`,
			`authentication.api_keys[0].keys_file: required (or give keys)`},
		{"trusted proxy not a CIDR", listener + `authentication: {trusted_proxies: ["10.0.0.0/8", "proxy.internal"]}`,
			`authentication.trusted_proxies[1]: want a CIDR such as 10.0.0.0/8`},
		{"identity key strips the bearer token", listener + jwt[:len(jwt)-2] + `, identity: {subject_header: authorization}}`,
			`authentication.identity.subject_header: "authorization" would strip the credential that authentication.jwt[0] reads from authorization`},
		{"claims prefix covers an API key header", listener + `authentication: {api_keys: [{name: p, keys_file: k.yaml, header: x-id-key}], identity: {claims_prefix: "x-id-"}}`,
			`authentication.identity.claims_prefix: "x-id-" would strip the credential that authentication.api_keys[0] reads from x-id-key`},
		{"claims prefix without a dash", listener + `authentication: {identity: {claims_prefix: "x-claims"}}`,
			`authentication.identity.claims_prefix: want a prefix that ends in "-"`},
		{"claims prefix covers the REST attributes", listener + `authentication: {identity: {claims_prefix: "x-gatehouse-"}}`,
			`authentication.identity.claims_prefix: "x-gatehouse-" would strip x-gatehouse-http-method from every call`},
		{"identity key is x-forwarded-for", listener + `authentication: {identity: {credential_header: x-forwarded-for}}`,
			`authentication.identity.credential_header: "x-forwarded-for" would strip x-forwarded-for`},
		{"identity keys overlap", listener + `authentication: {identity: {subject_header: x-user, credential_header: x-user}}`,
			`authentication.identity.credential_header: "x-user" overlaps authentication.identity.subject_header`},
		{"subject under the claims prefix", listener + `authentication: {identity: {subject_header: x-claims-sub, claims_prefix: x-claims-}}`,
			`authentication.identity.claims_prefix: "x-claims-" overlaps authentication.identity.subject_header ("x-claims-sub")`},
		{"internal JWT header is the subject", listener + `authentication: {internal_jwt: {signing_key_file: k.pem, audience: backends, header: x-gatehouse-subject}}`,
			`authentication.internal_jwt.header: "x-gatehouse-subject" overlaps authentication.identity.subject_header`},
		{"internal JWT without audience", listener + `authentication: {internal_jwt: {signing_key_file: k.pem}}`,
			`authentication.internal_jwt.audience: required`},
		{"internal JWT key inline", listener + `authentication: {internal_jwt: {signing_key_file: "-----BEGIN PRIVATE KEY-----\nMII", audience: b}}`,
			`authentication.internal_jwt.signing_key_file: give a file path or ${ENV_VAR}`},
		{"internal JWT without key", listener + `authentication: {internal_jwt: {audience: b}}`,
			`authentication.internal_jwt.signing_key_file`},
		{"internal JWT lifetime too long", listener + `authentication: {internal_jwt: {signing_key_file: k.pem, audience: b, lifetime: 2h}}`,
			`authentication.internal_jwt.lifetime`},
		{"inline key", `listeners: [{name: edge, address: "127.0.0.1:8080", tls: {cert_file: c.pem, key_file: "-----BEGIN PRIVATE KEY-----\nMII"}}]`,
			`listeners[0].tls.key_file: give a file path or ${ENV_VAR}, never the certificate or key inline`},
		{"client auth without CA", `listeners: [{name: edge, address: "127.0.0.1:8080", tls: {cert_file: c.pem, key_file: k.pem, client_auth: REQUIRE_AND_VERIFY}}]`,
			`listeners[0].tls.client_ca_file: required with client_auth REQUIRE_AND_VERIFY`},
		{"CA without client auth", `listeners: [{name: edge, address: "127.0.0.1:8080", tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}}]`,
			`listeners[0].tls.client_auth: client_ca_file is given but client certificates are not asked for`},
		{"backend TLS needs a server name", listener + `backends: [{name: c, endpoints: ["a.internal:1", "b.internal:1"], tls: {ca_file: ca.pem}}]`,
			`backends[0].tls.server_name: required when the endpoints have different hosts`},
		{"backend client cert without key", listener + `backends: [{name: c, endpoints: ["a.internal:1"], tls: {client_cert_file: c.pem}}]`,
			`backends[0].tls.client_cert_file: give both`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := tt.yaml
			if !strings.Contains(yaml, "backends:") {
				yaml = authBase + yaml
			}
			_, err := config.Parse("test.yaml", []byte(yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCheckAuthValid(t *testing.T) {
	yaml := authBase + `
listeners:
  - name: edge
    address: "0.0.0.0:8443"
    tls: { cert_file: "${EDGE_CERT}", key_file: tls/edge.key, client_ca_file: tls/clients.pem, client_auth: VERIFY_IF_GIVEN }
authentication:
  jwt:
    - name: corp
      issuer: "https://id.example.com/"
      audiences: ["gatehouse"]
      jwks_uri: "https://id.example.com/.well-known/jwks.json"
    - { name: local, issuer: "https://local/", audiences: [g], jwks_uri: "http://127.0.0.1:9000/jwks", from: { query: access_token } }
    - { name: env, issuer: "https://env/", audiences: [g], jwks_file: "${GATEHOUSE_JWKS}" }
  api_keys:
    - name: partners
      keys_file: "secrets/api-keys.yaml"
      header: "x-api-key"
    - { name: ops, keys_file: "${API_KEYS_FILE}", header: x-ops-key }
routes:
  - name: orders
    match: { service: "shop.orders.v1.Orders" }
    backend: b
    auth:
      require: ["corp", "partners", "mtls"]
      rules: ['"orders:read" in claims.scope.split(" ")']
      forward_token: true
      forward_claims: [scope]
  - name: login
    match: { service: "shop.auth.v1.Login" }
    backend: b
    auth: { require: [none], rules: ['peer.address != ""'] }
`
	yaml = strings.Replace(yaml, "authentication:\n", `authentication:
  trusted_proxies: ["10.0.0.0/8", "2001:db8::/32"]
  identity: { subject_header: x-user, credential_header: x-user-credential, claims_prefix: x-user-claim- }
  internal_jwt: { signing_key_file: "${GATEHOUSE_JWT_KEY}", key_id: gw-1, issuer: gatehouse, audience: backends, lifetime: 30s, header: x-internal-jwt }
`, 1)
	if _, err := config.Parse("test.yaml", []byte(yaml)); err != nil {
		t.Fatal(err)
	}
}
