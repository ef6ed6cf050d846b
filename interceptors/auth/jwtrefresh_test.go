package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// TestCachedTokenRefusedAfterKeyWithdrawn checks that the cache of
// verified tokens never outlives the key set: a token verified once and
// then sent again and again is refused once its key is withdrawn from the
// JWKS URL and the refresh that falls due has put the new set in force.
// The refresh is started by the reuse itself (no other call comes), in the
// background, once; the kid it leaves unknown costs one more fetch, not one
// per call.
func TestCachedTokenRefusedAfterKeyWithdrawn(t *testing.T) {
	f := newFixture(t)
	p := f.a.jwt["corp"]
	tok := f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["exp"] = f.clk.Now().Add(time.Hour).Unix() }), nil)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("first use: %v %q", out.code, out.msg)
	}
	hits := f.js.hits.Load()

	f.js.set(jwks(t, f.ec1)) // rsa-1 withdrawn
	// Within the interval the cached keys stand and nothing is fetched.
	f.clk.Advance(4 * time.Minute)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("reuse within the interval: %v", out.code)
	}
	if n := f.js.hits.Load() - hits; n != 0 {
		t.Fatalf("%d JWKS fetches within the interval, want 0", n)
	}

	f.clk.Advance(time.Minute + time.Second) // the refresh is due
	// The reuse that finds it due starts it and may still pass with the
	// cached keys meanwhile; it never waits for it.
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK && out.code != codes.Unauthenticated {
		t.Fatalf("reuse while refreshing: %v", out.code)
	}
	if err := f.fetched.wait(t); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	for i := range 3 {
		if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.Unauthenticated {
			t.Fatalf("reuse %d after the key was withdrawn: %v", i, out.code)
		}
	}
	// The refresh, then one fetch for the kid now unknown (at most one
	// per interval, however often the token comes back).
	if n := f.js.hits.Load() - hits; n != 2 {
		t.Errorf("%d JWKS fetches, want exactly 2: the refresh and one for the unknown kid", n)
	}
	if n := p.Fetches(); n != 3 { // at start, the refresh, the unknown kid
		t.Errorf("%d fetches started, want 3", n)
	}
	// A key still published keeps working after the refresh.
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(f.ec1.sign(t, "ES256", f.claims(nil), nil))); out.code != codes.OK {
		t.Errorf("token of a key still published: %v", out.code)
	}
}

// TestUnchangedJWKSKeepsCachedTokens: a refresh that fetches the same
// JWKS keeps the key set in force, so the tokens verified with it cost no
// new signature check.
func TestUnchangedJWKSKeepsCachedTokens(t *testing.T) {
	f := newFixture(t)
	p := f.a.jwt["corp"]
	tok := f.rsa1.sign(t, "RS256", f.claims(func(c map[string]any) { c["exp"] = f.clk.Now().Add(time.Hour).Unix() }), nil)
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("first use: %v", out.code)
	}
	snap := p.keys.Load()
	f.clk.Advance(6 * time.Minute)
	invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)) // starts the refresh
	if err := f.fetched.wait(t); err != nil {
		t.Fatal(err)
	}
	if out := invoke(t, f.ic, "/shop.Orders/Get", bearer(tok)); out.code != codes.OK {
		t.Fatalf("after the refresh: %v", out.code)
	}
	if p.keys.Load() != snap {
		t.Error("an unchanged JWKS replaced the key set")
	}
	if n := p.signatures.Load(); n != 1 {
		t.Errorf("%d signature checks, want 1", n)
	}
}

// jwksFileFixture is an authenticator with one provider reading a JWKS
// file, polled every second of clk.
func jwksFileFixture(t *testing.T, jwksPath string, ss ...*signer) (*clock, *Authenticator, func(md metadata.MD) outcome) {
	t.Helper()
	clk := newClock()
	if err := os.WriteFile(jwksPath, jwks(t, ss...), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse"}, JWKSFile: jwksPath}}, ClockSkew: time.Minute},
		WithClock(clk.Now), WithFilePoll(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	pol, err := NewPolicy(PolicySpec{Require: []string{"corp"}})
	if err != nil {
		t.Fatal(err)
	}
	ic := UnaryServerInterceptor(a, func(_ context.Context, _ string, _ metadata.MD) (Route, bool) {
		return Route{Name: "r", Policy: pol}, true
	})
	return clk, a, func(md metadata.MD) outcome { return invoke(t, ic, "/a.B/C", md) }
}

// TestCachedTokenRefusedAfterJWKSFileChange is the same for a JWKS file:
// the reuse of a cached token polls the file, and a changed file that
// drops the token's key refuses it at once.
func TestCachedTokenRefusedAfterJWKSFileChange(t *testing.T) {
	rsa1, ec1 := newRSA(t, "rsa-1"), newEC(t, "ec-1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	clk, a, call := jwksFileFixture(t, path, rsa1, ec1)
	claims := map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "alice", "exp": clk.Now().Add(time.Hour).Unix()}
	tok := rsa1.sign(t, "RS256", claims, nil)
	for i := range 3 {
		if out := call(bearer(tok)); out.code != codes.OK {
			t.Fatalf("use %d: %v %q", i, out.code, out.msg)
		}
	}
	if n := a.jwt["corp"].signatures.Load(); n != 1 {
		t.Fatalf("%d signature checks, want 1 (the cache is not used)", n)
	}
	writeAtomically(t, path, jwks(t, ec1)) // rsa-1 retired
	clk.Advance(2 * time.Second)           // past the poll interval
	if out := call(bearer(tok)); out.code != codes.Unauthenticated {
		t.Fatalf("reuse after the key left the file: %v", out.code)
	}
	if out := call(bearer(ec1.sign(t, "ES256", claims, nil))); out.code != codes.OK {
		t.Fatalf("token of a key still in the file: %v", out.code)
	}
}

// TestKeyFilesFromEnvironment checks "${ENV_VAR}" for jwks_file and
// keys_file: the variable's value is the content, as for the gateway's
// other secrets (tlsconfig.ReadSecret); an unset variable is an error at
// start that names the field and the variable.
func TestKeyFilesFromEnvironment(t *testing.T) {
	rsa1 := newRSA(t, "rsa-1")
	t.Setenv("GH_TEST_JWKS", string(jwks(t, rsa1)))
	t.Setenv("GH_TEST_API_KEYS", "- id: acme\n  sha256: "+hashKey("k-env-1")+"\n")
	clk := newClock()
	a, err := New(Config{
		JWT:     []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"gatehouse"}, JWKSFile: "${GH_TEST_JWKS}"}},
		APIKeys: []APIKeySet{{Name: "partners", KeysFile: "${GH_TEST_API_KEYS}"}},
	}, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pol, err := NewPolicy(PolicySpec{Require: []string{"corp", "partners"}})
	if err != nil {
		t.Fatal(err)
	}
	ic := UnaryServerInterceptor(a, func(_ context.Context, _ string, _ metadata.MD) (Route, bool) {
		return Route{Name: "r", Policy: pol}, true
	})
	tok := rsa1.sign(t, "RS256", map[string]any{"iss": issuer, "aud": "gatehouse", "sub": "alice", "exp": clk.Now().Add(time.Hour).Unix()}, nil)
	if out := invoke(t, ic, "/a.B/C", bearer(tok)); out.code != codes.OK || out.principal.Subject != "alice" {
		t.Errorf("JWT with the JWKS from the environment: %v %q", out.code, out.msg)
	}
	if out := invoke(t, ic, "/a.B/C", metadata.Pairs("x-api-key", "k-env-1")); out.code != codes.OK || out.principal.Subject != "acme" {
		t.Errorf("API key from the environment: %v %q", out.code, out.msg)
	}
	clk.Advance(time.Minute) // polling an environment variable is a no-op
	if out := invoke(t, ic, "/a.B/C", metadata.Pairs("x-api-key", "k-env-1")); out.code != codes.OK {
		t.Errorf("API key from the environment after the poll interval: %v", out.code)
	}

	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unset JWKS variable", Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"g"}, JWKSFile: "${GH_TEST_UNSET}", JWKSFileField: "authentication.jwt[0].jwks_file"}}},
			"authentication.jwt[0].jwks_file: environment variable GH_TEST_UNSET is not set"},
		{"unset keys variable", Config{APIKeys: []APIKeySet{{Name: "p", KeysFile: "${GH_TEST_UNSET}", KeysFileField: "authentication.api_keys[0].keys_file"}}},
			"authentication.api_keys[0].keys_file: environment variable GH_TEST_UNSET is not set"},
		{"variable that is not a JWKS", Config{JWT: []JWTProvider{{Name: "corp", Issuer: issuer, Audiences: []string{"g"}, JWKSFile: "${GH_TEST_API_KEYS}"}}},
			"jwks_file: ${GH_TEST_API_KEYS}: not a JWKS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg)
			if err == nil {
				a.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

// writeAtomically replaces path with data as a rename does, so that a poll
// never reads half a file.
func writeAtomically(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
