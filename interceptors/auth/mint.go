package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/gatehouse-dev/gatehouse/internal/callinfo"
)

// InternalJWT configures the token the gateway signs for backends.
type InternalJWT struct {
	// SigningKey is the PEM private key (PKCS #8, PKCS #1 RSA or SEC 1
	// EC): RSA (RS256), ECDSA P-256/384/521 (ES256/384/512) or Ed25519
	// (EdDSA).
	SigningKey []byte
	// KeyID is written in the token header as kid; "" for none.
	KeyID string
	// Issuer is the iss claim. Default "gatehouse".
	Issuer string
	// Audience is the aud claim; "" for none.
	Audience string
	// Lifetime is how long a token is valid. Default 60s.
	Lifetime time.Duration
	// Header is the metadata key that carries "Bearer <token>". Default
	// "x-gatehouse-jwt".
	Header string
}

// Minter signs short-lived JWTs that tell backends who the verified caller
// is, so that they trust one issuer whatever the caller presented. It is
// immutable and safe for concurrent use.
type Minter struct {
	key      jwk.Key
	alg      jwa.SignatureAlgorithm
	issuer   string
	audience string
	lifetime time.Duration
	header   string
	now      func() time.Time
}

// NewMinter parses the signing key of cfg. Of opts, only WithClock
// applies.
func NewMinter(cfg InternalJWT, opts ...Option) (*Minter, error) {
	o := evaluate(opts)
	raw, err := parsePrivateKey(cfg.SigningKey)
	if err != nil {
		return nil, err
	}
	alg, err := signingAlgorithm(raw)
	if err != nil {
		return nil, err
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if cfg.KeyID != "" {
		if err := key.Set(jwk.KeyIDKey, cfg.KeyID); err != nil {
			return nil, err
		}
	}
	m := &Minter{key: key, alg: alg, issuer: cfg.Issuer, audience: cfg.Audience, lifetime: cfg.Lifetime, header: cfg.Header, now: o.now}
	if m.issuer == "" {
		m.issuer = "gatehouse"
	}
	if m.lifetime <= 0 {
		m.lifetime = 60 * time.Second
	}
	if m.header == "" {
		m.header = "x-gatehouse-jwt"
	}
	return m, nil
}

// Header is the metadata key the token goes in.
func (m *Minter) Header() string { return m.header }

// Algorithm is the token's signing algorithm (alg).
func (m *Minter) Algorithm() jwa.SignatureAlgorithm { return m.alg }

// Mint returns a token for p: sub, iss, aud, iat, exp, and claims (the
// route's forwarded claims), which never replace those five.
func (m *Minter) Mint(p callinfo.Principal, claims []string) (string, error) {
	now := m.now()
	b := jwt.NewBuilder().Issuer(m.issuer).IssuedAt(now).Expiration(now.Add(m.lifetime))
	if p.Subject != "" {
		b = b.Subject(p.Subject)
	}
	if m.audience != "" {
		b = b.Audience([]string{m.audience})
	}
	for _, name := range claims {
		switch name {
		case jwt.SubjectKey, jwt.IssuerKey, jwt.AudienceKey, jwt.IssuedAtKey, jwt.ExpirationKey, jwt.NotBeforeKey, jwt.JwtIDKey:
			continue
		}
		if v, ok := p.Claims[name]; ok {
			b = b.Claim(name, v)
		}
	}
	tok, err := b.Build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(m.alg, m.key))
	if err != nil {
		return "", err
	}
	return string(signed), nil
}

// parsePrivateKey reads the first PEM private key block.
func parsePrivateKey(data []byte) (any, error) {
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, errors.New("no PEM private key")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			return x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		}
	}
}

// signingAlgorithm is the algorithm that fits a key.
func signingAlgorithm(key any) (jwa.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return jwa.SignatureAlgorithm{}, fmt.Errorf("RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		return jwa.RS256(), nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jwa.ES256(), nil
		case elliptic.P384():
			return jwa.ES384(), nil
		case elliptic.P521():
			return jwa.ES512(), nil
		}
		return jwa.SignatureAlgorithm{}, errors.New("ECDSA key on an unsupported curve")
	case ed25519.PrivateKey:
		return jwa.EdDSA(), nil
	}
	return jwa.SignatureAlgorithm{}, fmt.Errorf("unsupported key type %T (want RSA, ECDSA or Ed25519)", key)
}
