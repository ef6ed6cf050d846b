package auth

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// maxFileBytes bounds a key file (JWKS file, API key file).
const maxFileBytes = 1 << 20

// watchedFile is a key file reread when its content changes. It is checked
// lazily, when a call needs it, at most once per poll interval, so that no
// goroutine and no timer is needed; a file that cannot be read or parsed
// keeps the last good content in force and is logged.
//
// A path of the form "${ENV_VAR}" names an environment variable whose value
// is the content itself, as for the gateway's other secrets
// (tlsconfig.ReadSecret): it is read once, at start, and never polled.
type watchedFile struct {
	path  string
	field string // the config field that names it, for errors
	every time.Duration
	now   func() time.Time
	apply func([]byte) error // parses and puts the content in force
	warn  func(msg string, args ...any)

	mu      sync.Mutex
	checked time.Time
	sum     [sha256.Size]byte
}

// load reads and applies the file once; New calls it so that a missing or
// broken file is an error at start, naming its field.
func (f *watchedFile) load() error {
	data, err := f.read()
	if err != nil {
		return fmt.Errorf("%s: %w", f.field, err)
	}
	if err := f.apply(data); err != nil {
		return fmt.Errorf("%s: %s: %w", f.field, f.path, err)
	}
	f.mu.Lock()
	f.sum = sha256.Sum256(data)
	f.checked = f.now()
	f.mu.Unlock()
	return nil
}

// poll rereads the file when the poll interval has passed since the last
// check (always when force is set) and applies it when its content changed.
func (f *watchedFile) poll(force bool) {
	if isEnvRef(f.path) {
		return // the environment does not change while the gateway runs
	}
	if !f.mu.TryLock() {
		return // another call is checking it right now
	}
	defer f.mu.Unlock()
	now := f.now()
	if !force && now.Sub(f.checked) < f.every {
		return
	}
	f.checked = now
	data, err := readFileLimited(f.path)
	if err != nil {
		f.warn("key file not readable; the last good content stays in force", "field", f.field, "file", f.path, "error", err)
		return
	}
	sum := sha256.Sum256(data)
	if sum == f.sum {
		return
	}
	if err := f.apply(data); err != nil {
		f.warn("key file does not parse; the last good content stays in force", "field", f.field, "file", f.path, "error", err)
		return
	}
	f.sum = sum
}

// envRef is a key file given as "${ENV_VAR}".
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

func isEnvRef(path string) bool { return envRef.MatchString(path) }

// read returns the content in force: the file's, or the environment
// variable's value for "${ENV_VAR}".
func (f *watchedFile) read() ([]byte, error) {
	m := envRef.FindStringSubmatch(f.path)
	if m == nil {
		return readFileLimited(f.path)
	}
	v, ok := os.LookupEnv(m[1])
	if !ok || v == "" {
		return nil, fmt.Errorf("environment variable %s is not set", m[1])
	}
	if len(v) > maxFileBytes {
		return nil, fmt.Errorf("environment variable %s: larger than %d bytes", m[1], maxFileBytes)
	}
	return []byte(v), nil
}

func readFileLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}
