package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync/atomic"

	"go.yaml.in/yaml/v3"
)

// APIKeySet is a named set of API keys, stored as hashes.
type APIKeySet struct {
	// Name is what routes' require lists name.
	Name string
	// KeysFile is a YAML list of {id, sha256, labels}, reread when it
	// changes; or "${ENV_VAR}", whose value is that list, read once at
	// start; "" for none.
	KeysFile string
	// KeysFileField names the config field of KeysFile, for errors.
	KeysFileField string
	// Keys are given inline (hashes only).
	Keys []APIKey
	// Header is the metadata key (HTTP header) that carries the key.
	// Default "x-api-key".
	Header string
}

// APIKey is one key's hash and identity.
type APIKey struct {
	// ID is the key's identity: the principal's subject.
	ID string `yaml:"id"`
	// SHA256 is the hex SHA-256 of the key.
	SHA256 string `yaml:"sha256"`
	// Labels are visible to rules (principal.labels, claims) and quotas.
	Labels map[string]string `yaml:"labels"`
}

type keyEntry struct {
	id     string
	hash   [sha256.Size]byte
	labels map[string]string
}

// keySet checks API keys of one set. Its index is replaced whole when the
// keys file changes.
type keySet struct {
	name   string
	header string
	inline []keyEntry
	file   *watchedFile
	index  atomic.Pointer[map[[sha256.Size]byte]*keyEntry]
}

func newKeySet(s APIKeySet, o *options) (*keySet, error) {
	ks := &keySet{name: s.Name, header: strings.ToLower(s.Header)}
	if ks.header == "" {
		ks.header = "x-api-key"
	}
	for i, k := range s.Keys {
		e, err := keyEntryOf(k)
		if err != nil {
			return nil, fmt.Errorf("api key set %q: keys[%d]: %w", s.Name, i, err)
		}
		ks.inline = append(ks.inline, e)
	}
	ks.build(nil)
	if s.KeysFile != "" {
		field := s.KeysFileField
		if field == "" {
			field = "keys_file"
		}
		ks.file = &watchedFile{
			path: s.KeysFile, field: field, every: o.filePoll, now: o.now,
			warn: o.logger.Warn,
			apply: func(data []byte) error {
				keys, err := parseKeysFile(data)
				if err != nil {
					return err
				}
				ks.build(keys)
				return nil
			},
		}
		if err := ks.file.load(); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

func keyEntryOf(k APIKey) (keyEntry, error) {
	if k.ID == "" {
		return keyEntry{}, fmt.Errorf("id: required")
	}
	b, err := hex.DecodeString(k.SHA256)
	if err != nil || len(b) != sha256.Size || strings.ToLower(k.SHA256) != k.SHA256 {
		return keyEntry{}, fmt.Errorf("sha256: want 64 lower-case hex digits")
	}
	e := keyEntry{id: k.ID, labels: maps.Clone(k.Labels)}
	copy(e.hash[:], b)
	return e, nil
}

// parseKeysFile reads a keys file: a YAML list of {id, sha256, labels}.
func parseKeysFile(data []byte) ([]keyEntry, error) {
	var keys []APIKey
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&keys); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	out := make([]keyEntry, 0, len(keys))
	seen := map[string]int{}
	for i, k := range keys {
		e, err := keyEntryOf(k)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if j, dup := seen[k.ID]; dup {
			return nil, fmt.Errorf("[%d]: id %q is also [%d]", i, k.ID, j)
		}
		seen[k.ID] = i
		out = append(out, e)
	}
	return out, nil
}

func (ks *keySet) build(fromFile []keyEntry) {
	idx := make(map[[sha256.Size]byte]*keyEntry, len(ks.inline)+len(fromFile))
	for _, list := range [][]keyEntry{ks.inline, fromFile} {
		for i := range list {
			idx[list[i].hash] = &list[i]
		}
	}
	ks.index.Store(&idx)
}

// verify checks a presented key. The key itself is never compared: its
// SHA-256 is looked up among the stored hashes and the candidate found is
// compared in constant time. Lookup timing can only tell an attacker about
// the hash of what they sent, which does not help find a key.
func (ks *keySet) verify(key string) (keyEntry, bool) {
	if ks.file != nil {
		ks.file.poll(false)
	}
	h := sumString(key)
	e, ok := (*ks.index.Load())[h]
	if !ok || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 {
		return keyEntry{}, false
	}
	return *e, true
}
