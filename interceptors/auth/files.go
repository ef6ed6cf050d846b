package auth

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/tlsconfig"
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

func isEnvRef(path string) bool { return tlsconfig.IsEnvRef(path) }

// read returns the content in force: the file's, or the environment
// variable's value for "${ENV_VAR}" (tlsconfig.ReadSecret).
func (f *watchedFile) read() ([]byte, error) {
	if !isEnvRef(f.path) {
		return readFileLimited(f.path)
	}
	v, err := tlsconfig.ReadSecret(f.path)
	if err != nil {
		return nil, err
	}
	if len(v) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.path, maxFileBytes)
	}
	return v, nil
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
