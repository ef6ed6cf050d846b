// Package audit writes the gateway's audit trail: one JSON line per call,
// appended to a file, in which every record carries the SHA-256 of the one
// before it and of itself, so that [Verify] finds the first record that was
// altered, removed or reordered.
//
// A record line is a JSON object whose last member is "hash", the
// hex SHA-256 of the line's bytes before `,"hash":`; its "prev" member is
// the previous record's hash (64 zeros for the first record) and "seq"
// counts records from 1. The chain proves order and completeness up to the
// last record; removing records from the end leaves a shorter valid chain,
// which only a copy of the head hash kept elsewhere (Verify reports it)
// reveals.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Record is one audited call.
type Record struct {
	// Seq numbers records from 1; the sink sets it.
	Seq uint64 `json:"seq"`
	// Prev is the hash of the previous record; the sink sets it.
	Prev string `json:"prev"`
	// Time is when the call ended.
	Time time.Time `json:"time"`
	// Principal is who made the call.
	Principal Principal `json:"principal"`
	// Method is the full gRPC method, "/pkg.Service/Method".
	Method string `json:"method"`
	// Route and Backend are where the router sent the call.
	Route   string `json:"route,omitempty"`
	Backend string `json:"backend,omitempty"`
	// Request holds the captured request fields by path, masked where
	// redacted.
	Request map[string]any `json:"request,omitempty"`
	// Peer is the client's address.
	Peer string `json:"peer,omitempty"`
	// RequestID and TraceID tie the record to the access log and traces.
	RequestID string `json:"request_id,omitempty"`
	TraceID   string `json:"trace_id,omitempty"`
	// Decision is the gateway's verdict.
	Decision Decision `json:"decision"`
	// Outcome is how the call ended.
	Outcome Outcome `json:"outcome"`
}

// Principal is who made a call: never a secret.
type Principal struct {
	// Subject identifies the caller; empty when anonymous.
	Subject string `json:"subject,omitempty"`
	// Credential is how the caller authenticated ("jwt:corp", "api_key").
	Credential string `json:"credential,omitempty"`
	// KeyID identifies the API key used, never the key.
	KeyID string `json:"key_id,omitempty"`
}

// Decision is the gateway's verdict on a call.
type Decision struct {
	// Allowed is false when a gateway check refused the call.
	Allowed bool `json:"allowed"`
	// By names the check that decided ("authentication", a rule's name,
	// "quota:<policy>", "audit"); empty when nothing objected.
	By string `json:"by,omitempty"`
}

// Outcome is how a call ended.
type Outcome struct {
	// Code is the gRPC status code name, "OK", "NotFound", ...
	Code string `json:"code"`
	// DurationMS is the call's duration in milliseconds.
	DurationMS float64 `json:"duration_ms"`
}

// Redacted replaces the value of a masked field.
const Redacted = "[REDACTED]"

// genesis is the Prev of the first record.
var genesis = strings.Repeat("0", sha256.Size*2)

const hashKey = `,"hash":"`

// encode returns the line of rec (without newline) and its hash.
func encode(rec *Record) ([]byte, string, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, "", err
	}
	body = body[:len(body)-1] // drop the closing brace
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	line := make([]byte, 0, len(body)+len(hashKey)+len(h)+2)
	line = append(line, body...)
	line = append(line, hashKey...)
	line = append(line, h...)
	line = append(line, '"', '}')
	return line, h, nil
}

// decode parses a record line and checks its own hash. It returns the
// record and its hash.
func decode(line []byte) (*Record, string, error) {
	i := bytes.LastIndex(line, []byte(hashKey))
	if i < 0 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return nil, "", errors.New("no hash")
	}
	stated := string(line[i+len(hashKey) : len(line)-2])
	sum := sha256.Sum256(line[:i])
	if hex.EncodeToString(sum[:]) != stated {
		return nil, "", errors.New("its hash does not match its content")
	}
	var rec Record
	if err := json.Unmarshal(line, &rec); err != nil {
		return nil, "", fmt.Errorf("not a JSON record: %v", err)
	}
	return &rec, stated, nil
}
