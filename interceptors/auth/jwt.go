package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// JWTProvider checks bearer JWTs from one issuer.
type JWTProvider struct {
	// Name is what routes' require lists name.
	Name string
	// Issuer is the required iss claim.
	Issuer string
	// Audiences are the accepted aud values; the token must carry one.
	Audiences []string
	// JWKSURI is where the signing keys are published; exactly one of
	// JWKSURI and JWKSFile.
	JWKSURI string
	// JWKSFile is a local JWKS, reread when it changes; or "${ENV_VAR}",
	// whose value is the JWKS itself, read once at start.
	JWKSFile string
	// JWKSFileField names the config field of JWKSFile, for errors.
	JWKSFileField string
	// Algorithms are the allowed signing algorithms. Default RS256, ES256,
	// EdDSA. HMAC and "none" are never allowed.
	Algorithms []string
	// Refresh is how often the JWKS is fetched again; an unknown kid
	// triggers at most one extra fetch per Refresh. Default 5m.
	Refresh time.Duration
	// Header is the metadata key (HTTP header) that carries the token; for
	// "authorization" (the default) the token is the Bearer credential.
	Header string
	// Query is a URL query parameter that carries the token (REST calls);
	// exclusive with Header.
	Query string
}

// DefaultAlgorithms are the algorithms a provider allows when it names none.
var DefaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// allowedAlgorithms are the only algorithms a provider may allow: asymmetric
// signatures. HMAC is never allowed: a JWKS publishes public keys, and an
// HMAC "verified" with a public key proves nothing.
var allowedAlgorithms = map[string]jwa.SignatureAlgorithm{
	"RS256": jwa.RS256(), "RS384": jwa.RS384(), "RS512": jwa.RS512(),
	"PS256": jwa.PS256(), "PS384": jwa.PS384(), "PS512": jwa.PS512(),
	"ES256": jwa.ES256(), "ES384": jwa.ES384(), "ES512": jwa.ES512(),
	"EdDSA": jwa.EdDSA(),
}

// Limits of a JWKS document.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
	minRSABits   = 2048
)

// pubKey is one verification key of a JWKS.
type pubKey struct {
	kid string
	alg string // the JWK's alg; "" when it has none
	key any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySnapshot is a provider's key set in force.
type keySnapshot struct {
	byKid map[string][]pubKey
}

// jwtProvider verifies the tokens of one issuer.
type jwtProvider struct {
	name      string
	issuer    string
	audiences []string
	algs      map[string]jwa.SignatureAlgorithm
	src       tokenSource
	uri       string
	file      *watchedFile
	refresh   time.Duration
	a         *Authenticator

	keys atomic.Pointer[keySnapshot]

	mu        sync.Mutex
	inflight  chan struct{} // closed when the fetch under way ends; nil when none
	nextDue   time.Time     // when the next periodic fetch is due
	due       atomic.Int64  // nextDue in Unix nanoseconds, read without mu
	lastExtra time.Time     // when an unknown kid last caused a fetch
	failures  int
	fetches   atomic.Int64

	fetchedSum [sha256.Size]byte // of the JWKS in force; only fetch, one at a time, uses it

	verified   verifiedCache // tokens whose signature was checked lately
	signatures atomic.Int64  // signature checks made (tests)
}

func newJWTProvider(a *Authenticator, s JWTProvider) (*jwtProvider, error) {
	p := &jwtProvider{
		name: s.Name, issuer: s.Issuer, audiences: slices.Clone(s.Audiences),
		algs: map[string]jwa.SignatureAlgorithm{}, uri: s.JWKSURI, refresh: s.Refresh, a: a,
	}
	if p.issuer == "" {
		return nil, fmt.Errorf("jwt provider %q: issuer is required", s.Name)
	}
	if len(p.audiences) == 0 {
		return nil, fmt.Errorf("jwt provider %q: at least one audience is required", s.Name)
	}
	if p.refresh <= 0 {
		p.refresh = 5 * time.Minute
	}
	algs := s.Algorithms
	if len(algs) == 0 {
		algs = DefaultAlgorithms
	}
	for _, name := range algs {
		alg, ok := allowedAlgorithms[name]
		if !ok {
			return nil, fmt.Errorf("jwt provider %q: algorithm %q is not allowed", s.Name, name)
		}
		p.algs[name] = alg
	}
	src, err := newTokenSource(s.Header, s.Query)
	if err != nil {
		return nil, fmt.Errorf("jwt provider %q: %w", s.Name, err)
	}
	p.src = src
	switch {
	case (s.JWKSURI == "") == (s.JWKSFile == ""):
		return nil, fmt.Errorf("jwt provider %q: give exactly one of jwks_uri and jwks_file", s.Name)
	case s.JWKSFile != "":
		field := s.JWKSFileField
		if field == "" {
			field = "jwks_file"
		}
		p.file = &watchedFile{
			path: s.JWKSFile, field: field, every: a.opts.filePoll, now: a.opts.now, warn: a.opts.logger.Warn,
			apply: func(data []byte) error {
				snap, err := parseJWKS(data)
				if err != nil {
					return err
				}
				p.keys.Store(snap)
				return nil
			},
		}
		if err := p.file.load(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// refreshIfDue polls a JWKS file (at most once per poll interval), or
// starts the periodic fetch of a JWKS URL in the background when it is
// due; it never waits. The calls under way keep the key set in force.
func (p *jwtProvider) refreshIfDue() {
	if p.file != nil {
		p.file.poll(false)
		return
	}
	if p.a.opts.now().UnixNano() < p.due.Load() {
		return // not due: no lock on the way of every call
	}
	p.mu.Lock()
	if !p.a.opts.now().Before(p.nextDue) {
		p.startFetchLocked()
	}
	p.mu.Unlock()
}

// start begins the first fetch of a JWKS URL, in the background.
func (p *jwtProvider) start() {
	if p.uri == "" {
		return
	}
	p.mu.Lock()
	p.startFetchLocked()
	p.mu.Unlock()
}

// Fetches returns how many JWKS fetches the provider started.
func (p *jwtProvider) Fetches() int64 { return p.fetches.Load() }

// startFetchLocked starts a fetch unless one is under way, and returns the
// channel closed when it ends. The caller holds p.mu.
func (p *jwtProvider) startFetchLocked() chan struct{} {
	if p.inflight != nil {
		return p.inflight
	}
	done := make(chan struct{})
	p.inflight = done
	p.fetches.Add(1)
	p.a.wg.Add(1)
	go func() {
		defer p.a.wg.Done()
		err := p.fetch()
		now := p.a.opts.now()
		p.mu.Lock()
		if err != nil {
			p.failures++
			// Retry sooner than the interval while failing: 1s, 2s, 4s ...
			backoff := min(p.refresh, time.Second<<min(p.failures-1, 16))
			p.nextDue = now.Add(backoff)
		} else {
			p.failures = 0
			p.nextDue = now.Add(p.refresh)
		}
		p.due.Store(p.nextDue.UnixNano())
		p.inflight = nil
		p.mu.Unlock()
		close(done)
		if err != nil {
			p.a.opts.logger.Warn("JWKS fetch failed; cached keys stay in force", "provider", p.name, "uri", p.uri, "error", err)
		}
		if p.a.opts.onFetch != nil {
			p.a.opts.onFetch(p.name, err)
		}
	}()
	return done
}

// fetch gets the JWKS and puts it in force; on failure the keys in force
// stay.
func (p *jwtProvider) fetch() error {
	ctx, cancel := context.WithTimeout(p.a.ctx, p.a.opts.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.uri, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := p.a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("JWKS answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return err
	}
	if len(data) > maxJWKSBytes {
		return fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	sum := sha256.Sum256(data)
	if sum == p.fetchedSum && p.keys.Load() != nil {
		return nil // unchanged: the key set in force, and the tokens it verified, stand
	}
	snap, err := parseJWKS(data)
	if err != nil {
		return err
	}
	p.keys.Store(snap)
	p.fetchedSum = sum
	return nil
}

// parseJWKS keeps the usable verification keys of a JWKS: public RSA
// (2048 bits or more), EC (P-256, P-384, P-521) and Ed25519 keys whose use,
// when given, is "sig". Symmetric keys are dropped: a JWKS must never make
// an HMAC acceptable.
func parseJWKS(data []byte) (*keySnapshot, error) {
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if set.Len() > maxJWKSKeys {
		return nil, fmt.Errorf("JWKS has %d keys, more than %d", set.Len(), maxJWKSKeys)
	}
	snap := &keySnapshot{byKid: map[string][]pubKey{}}
	for i := range set.Len() {
		k, ok := set.Key(i)
		if !ok {
			continue
		}
		if use, ok := k.KeyUsage(); ok && use != "" && use != string(jwk.ForSignature) {
			continue
		}
		pk, err := k.PublicKey()
		if err != nil {
			continue // a symmetric key has no public key
		}
		var raw any
		if err := jwk.Export(pk, &raw); err != nil {
			continue
		}
		switch rk := raw.(type) {
		case *rsa.PublicKey:
			if rk.N.BitLen() < minRSABits {
				continue
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		kid, _ := k.KeyID()
		var alg string
		if a, ok := k.Algorithm(); ok {
			alg = a.String()
		}
		snap.byKid[kid] = append(snap.byKid[kid], pubKey{kid: kid, alg: alg, key: raw})
	}
	if len(snap.byKid) == 0 {
		return nil, errors.New("JWKS has no usable signing key")
	}
	return snap, nil
}

// fits reports whether key k may verify a token signed with alg: the key's
// type (and curve) must be the algorithm's, and a JWK that names its alg
// must name this one.
func (k pubKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func (s *keySnapshot) find(kid, alg string) (pubKey, bool) {
	if s == nil {
		return pubKey{}, false
	}
	for _, k := range s.byKid[kid] {
		if k.fits(alg) {
			return k, true
		}
	}
	return pubKey{}, false
}

// Errors of token verification. Clients never see them: they are logged
// and counted.
var (
	errNoKeys     = errors.New("no signing keys yet")
	errUnknownKid = errors.New("no key for the token's kid and alg")
)

// key returns the key for kid and alg. It refreshes the key set when the
// refresh interval has passed (in the background: calls keep the cached
// keys meanwhile), waits for a fetch when there are no keys yet, and
// fetches again for an unknown kid at most once per refresh interval.
func (p *jwtProvider) key(ctx context.Context, kid, alg string) (pubKey, error) {
	if p.file != nil {
		p.file.poll(false)
		if k, ok := p.keys.Load().find(kid, alg); ok {
			return k, nil
		}
		return pubKey{}, errUnknownKid
	}
	now := p.a.opts.now()
	p.mu.Lock()
	snap := p.keys.Load()
	var wait chan struct{}
	if !now.Before(p.nextDue) {
		wait = p.startFetchLocked()
	}
	switch {
	case snap == nil:
		// No keys yet: wait for the fetch under way, or the one just
		// started; never let the call through.
		wait = p.inflight
	default:
		if k, ok := snap.find(kid, alg); ok {
			p.mu.Unlock()
			return k, nil
		}
		switch {
		case p.inflight != nil:
			wait = p.inflight // join it: it may bring the key
		case p.lastExtra.IsZero() || now.Sub(p.lastExtra) >= p.refresh:
			p.lastExtra = now
			wait = p.startFetchLocked()
		default:
			wait = nil
		}
	}
	p.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return pubKey{}, ctx.Err()
		}
	}
	snap = p.keys.Load()
	if snap == nil {
		return pubKey{}, errNoKeys
	}
	if k, ok := snap.find(kid, alg); ok {
		return k, nil
	}
	return pubKey{}, errUnknownKid
}

// jwtHeader is what is read from a token's protected header before its
// signature is checked.
type jwtHeader struct {
	Alg string          `json:"alg"`
	Kid string          `json:"kid"`
	Jku json.RawMessage `json:"jku"`
	X5u json.RawMessage `json:"x5u"`
	Jwk json.RawMessage `json:"jwk"`
}

// splitToken checks a compact JWS's shape before anything is decoded: three
// non-empty base64url segments.
func splitToken(tok string) (header, payload string, err error) {
	var dots [2]int
	n := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			if n == 2 {
				return "", "", errors.New("malformed token: more than three segments")
			}
			dots[n] = i
			n++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return "", "", errors.New("malformed token: not base64url")
		}
	}
	if n != 2 || dots[0] == 0 || dots[1] == dots[0]+1 || dots[1] == len(tok)-1 {
		return "", "", errors.New("malformed token: want three non-empty segments")
	}
	return tok[:dots[0]], tok[dots[0]+1 : dots[1]], nil
}

// peekIssuer reads the unverified iss claim, only to pick which provider
// verifies the token.
func peekIssuer(payload string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", errors.New("malformed token payload")
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", errors.New("malformed token payload")
	}
	return c.Iss, nil
}

// cached returns the claims of tok if the provider verified it lately
// with the key set still in force and its time limits still hold (checked
// again now, as ParseString checks them); sum is the token's cache key,
// for verify when it is not. A token from another issuer is never in the
// cache: it was not verified here.
func (p *jwtProvider) cached(tok string) (claims map[string]any, sum [sha256.Size]byte, ok bool) {
	sum = sumString(tok)
	// A hit must not hold the key set still: start the refresh that is
	// due (or poll the file) as a miss would, so that a key withdrawn from
	// the JWKS stops counting for the tokens it verified once the new set
	// is in force, however often those tokens come back.
	p.refreshIfDue()
	snap := p.keys.Load()
	if v, hit := p.verified.get(sum); hit && snap != nil && v.keys == snap {
		if jwt.Validate(v.token, p.validateOptions()...) == nil {
			return v.claims, sum, true
		}
	}
	return nil, sum, false
}

// sumString is the SHA-256 of s, read in place: converting a credential
// to a []byte would copy it (up to the token size limit) on every call.
// Sum256 neither keeps nor changes its input.
func sumString(s string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// verify checks a token that cached does not have and returns its claims;
// sum is its cache key. The claims map is shared with later calls that
// bring the same token: read it, never change it.
func (p *jwtProvider) verify(ctx context.Context, tok, headerSeg, payloadSeg string, sum [sha256.Size]byte) (map[string]any, error) {
	snap := p.keys.Load()
	hb, err := base64.RawURLEncoding.DecodeString(headerSeg)
	if err != nil {
		return nil, errors.New("malformed token header")
	}
	var h jwtHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, errors.New("malformed token header")
	}
	if h.Jku != nil || h.X5u != nil || h.Jwk != nil {
		// Keys come from the provider's JWKS only; a token never names its
		// own key, and those URLs are never fetched.
		return nil, errors.New("token header names its own key (jku, x5u or jwk)")
	}
	alg, ok := p.algs[h.Alg]
	if !ok {
		return nil, fmt.Errorf("algorithm %s is not allowed", logSafe(h.Alg))
	}
	k, err := p.key(ctx, h.Kid, h.Alg)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ParseOption{jwt.WithKey(alg, k.key), jwt.WithValidate(true)}
	for _, o := range p.validateOptions() {
		opts = append(opts, o)
	}
	p.signatures.Add(1)
	t, err := jwt.ParseString(tok, opts...)
	if err != nil {
		return nil, err
	}
	auds, _ := t.Audience()
	if !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(p.audiences, a) }) {
		return nil, errors.New("audience not accepted")
	}
	// The payload is verified: decode it for the claims, numbers as
	// float64 or int64 as CEL expects them.
	pb, err := base64.RawURLEncoding.DecodeString(payloadSeg)
	if err != nil {
		return nil, errors.New("malformed token payload")
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, errors.New("malformed token payload")
	}
	claims = normalizeNumbers(claims).(map[string]any)
	if snap != nil && p.keys.Load() == snap { // the key came from snap
		p.verified.put(sum, verifiedToken{keys: snap, token: t, claims: claims})
	}
	return claims, nil
}

// validateOptions are the checks of a token's claims besides its
// signature and audience: issuer, expiry required, times within the skew.
func (p *jwtProvider) validateOptions() []jwt.ValidateOption {
	return []jwt.ValidateOption{
		jwt.WithIssuer(p.issuer),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithAcceptableSkew(p.a.skew),
		jwt.WithClock(jwt.ClockFunc(p.a.opts.now)),
	}
}

// maxVerifiedTokens bounds a provider's cache of verified tokens.
const maxVerifiedTokens = 4096

// verifiedCache remembers the tokens a provider verified lately, by the
// SHA-256 of the whole token, so that a client that sends the same token
// with every call (the usual case) costs one signature check per token
// rather than per call: an RS256 or ES256 check takes 70–120 µs, more than
// the rest of a proxied call. An entry counts only while the key set it
// was verified with is still in force (a JWKS that changes, by rotation,
// refresh or reload, replaces the set; one fetched again unchanged does
// not), and only while the token's own time limits
// hold, checked at every use; otherwise the token is verified afresh.
// Failures are never remembered. When full, about an eighth of the entries
// (arbitrary ones) make room.
type verifiedCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedToken
}

// verifiedToken is a token whose signature and claims were checked with
// the key set keys.
type verifiedToken struct {
	keys   *keySnapshot
	token  jwt.Token
	claims map[string]any
}

func (c *verifiedCache) get(k [sha256.Size]byte) (verifiedToken, bool) {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	return v, ok
}

func (c *verifiedCache) put(k [sha256.Size]byte, v verifiedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[sha256.Size]byte]verifiedToken)
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= maxVerifiedTokens {
		n := len(c.m) / 8
		for old := range c.m {
			if n--; n < 0 {
				break
			}
			delete(c.m, old)
		}
	}
	c.m[k] = v
}

// normalizeNumbers turns json.Numbers into int64 when integral, else
// float64.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// logSafe shortens a client-given value and drops what is not printable
// ASCII, for logs.
func logSafe(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' {
			b[i] = '?'
		}
	}
	return string(b)
}
