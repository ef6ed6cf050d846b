// Package tlsconfig builds the gateway's TLS configurations: listeners'
// (certificate and key files reloaded when they change on disk, optional or
// required client certificates against a CA bundle, TLS 1.2 at least, ALPN
// for HTTP/2 and HTTP/1.1) and backends' (CA bundle, server name, optional
// client certificate).
//
// Secrets may be given as a file path or as "${ENV_VAR}", whose value is
// then the PEM itself; an inline PEM is refused by the config checker.
// Reloading is lazy: a handshake checks the files at most once per poll
// interval (default 1s) and puts a changed, valid pair in force; a pair
// that does not load keeps the previous one in force and is logged.
// Connections already open are never touched.
package tlsconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// Client authentication modes, as written in config.
const (
	NoClientCert     = "NO_CLIENT_CERT"
	VerifyIfGiven    = "VERIFY_IF_GIVEN"
	RequireAndVerify = "REQUIRE_AND_VERIFY"
)

// ServerSpec is a listener's TLS.
type ServerSpec struct {
	// CertFile and KeyFile are the certificate chain and its key (PEM), as
	// file paths or "${ENV_VAR}".
	CertFile, KeyFile string
	// ClientCAFile is the CA bundle that client certificates are verified
	// against.
	ClientCAFile string
	// ClientAuth is NoClientCert (default), VerifyIfGiven or
	// RequireAndVerify.
	ClientAuth string
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string
	// Field is the config path of the block ("listeners[0].tls"), for
	// errors.
	Field string
}

// Option configures a Server or a client configuration.
type Option func(*options)

type options struct {
	now    func() time.Time
	poll   time.Duration
	logger *slog.Logger
}

// WithClock sets the clock of file polling (for tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithPoll sets how often, at most, files are checked for changes. Default
// 1s.
func WithPoll(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithLogger sets the logger of reload failures. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

func evaluate(opts []Option) options {
	o := options{now: time.Now, poll: time.Second, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Server is a listener's TLS configuration source. It is safe for
// concurrent use.
type Server struct {
	spec       ServerSpec
	o          options
	nextProtos []string
	clientAuth tls.ClientAuthType
	minVersion uint16

	cfg atomic.Pointer[tls.Config] // in force

	mu      sync.Mutex
	checked time.Time
	sum     [sha256.Size]byte
}

// NewServer loads the files of spec; an error names the field at fault.
// nextProtos are the ALPN protocols offered, e.g. "h2", "http/1.1".
func NewServer(spec ServerSpec, nextProtos []string, opts ...Option) (*Server, error) {
	s := &Server{spec: spec, o: evaluate(opts), nextProtos: nextProtos}
	switch spec.MinVersion {
	case "", "1.2":
		s.minVersion = tls.VersionTLS12
	case "1.3":
		s.minVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("%s.min_version: want 1.2 or 1.3, got %q", spec.Field, spec.MinVersion)
	}
	switch spec.ClientAuth {
	case "", NoClientCert:
		s.clientAuth = tls.NoClientCert
	case VerifyIfGiven:
		s.clientAuth = tls.VerifyClientCertIfGiven
	case RequireAndVerify:
		s.clientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("%s.client_auth: unknown mode %q", spec.Field, spec.ClientAuth)
	}
	if s.clientAuth != tls.NoClientCert && spec.ClientCAFile == "" {
		return nil, fmt.Errorf("%s.client_ca_file: required with client_auth %s", spec.Field, spec.ClientAuth)
	}
	cfg, sum, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cfg.Store(cfg)
	s.sum, s.checked = sum, s.o.now()
	return s, nil
}

// load reads every file and builds the configuration in force.
func (s *Server) load() (*tls.Config, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	certPEM, err := ReadSecret(s.spec.CertFile)
	if err != nil {
		return nil, sum, fmt.Errorf("%s.cert_file: %w", s.spec.Field, err)
	}
	keyPEM, err := ReadSecret(s.spec.KeyFile)
	if err != nil {
		return nil, sum, fmt.Errorf("%s.key_file: %w", s.spec.Field, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, sum, fmt.Errorf("%s.cert_file, key_file: %w", s.spec.Field, err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   s.minVersion,
		NextProtos:   s.nextProtos,
		ClientAuth:   s.clientAuth,
	}
	if s.spec.ClientCAFile != "" {
		caPEM, err := ReadSecret(s.spec.ClientCAFile)
		if err != nil {
			return nil, sum, fmt.Errorf("%s.client_ca_file: %w", s.spec.Field, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, sum, fmt.Errorf("%s.client_ca_file: no PEM certificate in %s", s.spec.Field, s.spec.ClientCAFile)
		}
		h.Write(caPEM)
		cfg.ClientCAs = pool
	}
	copy(sum[:], h.Sum(nil))
	return cfg, sum, nil
}

// reload puts changed files in force, at most once per poll interval.
func (s *Server) reload() {
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	now := s.o.now()
	if now.Sub(s.checked) < s.o.poll {
		return
	}
	s.checked = now
	cfg, sum, err := s.load()
	if err != nil {
		s.o.logger.Warn("TLS files do not load; the certificate in force stays", "field", s.spec.Field, "error", err)
		return
	}
	if sum != s.sum {
		s.sum = sum
		s.cfg.Store(cfg)
		s.o.logger.Info("TLS certificate reloaded", "field", s.spec.Field)
	}
}

// Config returns the listener's tls.Config: every handshake gets the
// configuration in force, reloaded from the files when they changed.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: s.minVersion,
		NextProtos: s.nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.reload()
			return s.cfg.Load(), nil
		},
	}
}

// ClientSpec is the gateway's TLS to a backend.
type ClientSpec struct {
	// CAFile verifies the backend's certificate; "" for the system roots.
	CAFile string
	// ServerName is the name to verify.
	ServerName string
	// CertFile and KeyFile are an optional client certificate.
	CertFile, KeyFile string
	// Field is the config path of the block ("backends[0].tls").
	Field string
}

// NewClient returns the TLS configuration for a backend. The client
// certificate, when given, is reloaded when its files change.
func NewClient(spec ClientSpec, opts ...Option) (*tls.Config, error) {
	o := evaluate(opts)
	cfg := &tls.Config{ServerName: spec.ServerName, MinVersion: tls.VersionTLS12}
	if spec.CAFile != "" {
		caPEM, err := ReadSecret(spec.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", spec.Field, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("%s.ca_file: no PEM certificate in %s", spec.Field, spec.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (spec.CertFile == "") != (spec.KeyFile == "") {
		return nil, fmt.Errorf("%s.client_cert_file: give both client_cert_file and client_key_file, or neither", spec.Field)
	}
	if spec.CertFile != "" {
		s := &Server{spec: ServerSpec{CertFile: spec.CertFile, KeyFile: spec.KeyFile, Field: spec.Field}, o: o, minVersion: tls.VersionTLS12}
		first, sum, err := s.load()
		if err != nil {
			return nil, clientFieldError(err)
		}
		s.cfg.Store(first)
		s.sum, s.checked = sum, o.now()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s.reload()
			return &s.cfg.Load().Certificates[0], nil
		}
	}
	return cfg, nil
}

// clientFieldError renames the server field names in a client error.
func clientFieldError(err error) error {
	msg := err.Error()
	msg = regexp.MustCompile(`\.cert_file`).ReplaceAllString(msg, ".client_cert_file")
	msg = regexp.MustCompile(`\.key_file`).ReplaceAllString(msg, ".client_key_file")
	return errors.New(msg)
}

// envRef is a secret given as "${ENV_VAR}".
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// ReadSecret returns the content a field names: the value of the
// environment variable of "${ENV_VAR}", else the file's content.
func ReadSecret(ref string) ([]byte, error) {
	if m := envRef.FindStringSubmatch(ref); m != nil {
		v, ok := os.LookupEnv(m[1])
		if !ok || v == "" {
			return nil, fmt.Errorf("environment variable %s is not set", m[1])
		}
		return []byte(v), nil
	}
	if ref == "" {
		return nil, errors.New("required")
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// IsEnvRef reports whether a field's value is "${ENV_VAR}".
func IsEnvRef(ref string) bool { return envRef.MatchString(ref) }
