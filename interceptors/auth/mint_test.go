package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

func pemKey(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestMinter(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m, err := NewMinter(InternalJWT{SigningKey: pemKey(t, priv), Audience: "backends"}, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header() != "x-gatehouse-jwt" || m.Algorithm() != jwa.EdDSA() {
		t.Errorf("defaults: header %q, alg %v", m.Header(), m.Algorithm())
	}
	p := callinfo.Principal{Subject: "alice", Credential: "jwt:corp", Claims: map[string]any{
		"scope": "a b", "groups": []any{"x", "y"}, "sub": "mallory", "exp": 1e12, "secret": "not forwarded",
	}}
	tok, err := m.Mint(p, []string{"scope", "groups", "sub", "exp", "absent"})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseString(tok, jwt.WithKey(jwa.EdDSA(), pub), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now.Add(59 * time.Second) })),
		jwt.WithIssuer("gatehouse"), jwt.WithAudience("backends"))
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	sub, _ := parsed.Subject()
	exp, _ := parsed.Expiration()
	var scope string
	_ = parsed.Get("scope", &scope)
	if sub != "alice" || !exp.Equal(now.Add(time.Minute)) || scope != "a b" || parsed.Has("secret") || parsed.Has("absent") {
		t.Errorf("claims: sub %q exp %v scope %q keys %v", sub, exp, scope, parsed.Keys())
	}
	if _, err := jwt.ParseString(tok, jwt.WithKey(jwa.EdDSA(), pub), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now.Add(2 * time.Minute) }))); err == nil {
		t.Error("the token is valid after its lifetime")
	}
}

func TestNewMinterKeys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	tests := []struct {
		name, wantAlg, wantErr string
		key                    []byte
	}{
		{"EC P-384 in SEC 1", "ES384", "", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})},
		{"small RSA", "", "at least 2048", pemKey(t, small)},
		{"no PEM", "", "no PEM private key", []byte("not a key")},
		{"a certificate only", "", "no PEM private key", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMinter(InternalJWT{SigningKey: tt.key})
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case m.Algorithm().String() != tt.wantAlg:
				t.Errorf("alg = %v, want %s", m.Algorithm(), tt.wantAlg)
			}
		})
	}
}
