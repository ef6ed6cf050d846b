package accesslog

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// JSONHandler is a slog.Handler that writes the same JSON lines as
// slog.NewJSONHandler(w, nil), byte for byte, for records whose attributes
// are strings, integers, floats, booleans and durations, which access log
// lines are; it formats them in a few hundred nanoseconds, without the
// reflection slog's handler uses for every float (through encoding/json)
// or its per-record state. A record with any other kind of attribute (a
// time, a group, an error or any other value), and the handlers WithAttrs
// and WithGroup return, go through slog.JSONHandler itself.
//
// Like slog's, it logs records at slog.LevelInfo and above, and writes
// each line with one Write call, never two at once.
type JSONHandler struct {
	mu *sync.Mutex
	w  io.Writer
	// slow is slog's own JSON handler over the same writer and mutex
	// (through lockedWriter), for what the fast path does not format.
	slow slog.Handler
}

var _ slog.Handler = (*JSONHandler)(nil)

// NewJSONHandler returns a JSONHandler that writes to w.
func NewJSONHandler(w io.Writer) *JSONHandler {
	mu := new(sync.Mutex)
	return &JSONHandler{mu: mu, w: w, slow: slog.NewJSONHandler(lockedWriter{mu: mu, w: w}, nil)}
}

// lockedWriter serialises slog.JSONHandler's writes with the fast path's.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Enabled reports whether level is at least slog.LevelInfo.
func (h *JSONHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}

// WithAttrs returns slog's JSON handler with attrs, over the same writer.
func (h *JSONHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.slow.WithAttrs(attrs)
}

// WithGroup returns slog's JSON handler with the group, over the same
// writer.
func (h *JSONHandler) WithGroup(name string) slog.Handler {
	return h.slow.WithGroup(name)
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Handle writes r as one JSON line.
func (h *JSONHandler) Handle(ctx context.Context, r slog.Record) error {
	if !fastRecord(r) {
		return h.slow.Handle(ctx, r)
	}
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, '{')
	if !r.Time.IsZero() {
		b = append(b, `"time":"`...)
		b = r.Time.Round(0).AppendFormat(b, time.RFC3339Nano)
		b = append(b, `",`...)
	}
	b = append(b, `"level":`...)
	b = appendString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendString(b, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b = append(b, ',')
		b = appendString(b, a.Key)
		b = append(b, ':')
		b = appendValue(b, a.Value)
		return true
	})
	b = append(b, '}', '\n')
	h.mu.Lock()
	_, err := h.w.Write(b)
	h.mu.Unlock()
	if cap(b) <= 64<<10 { // keep an occasional huge line out of the pool
		*bp = b
		linePool.Put(bp)
	}
	return err
}

// fastRecord reports whether the fast path formats every attribute of r
// exactly as slog.JSONHandler does: the kinds it knows, keys that are not
// empty (slog drops an attribute with no key and a zero value, and writes
// other empty keys), and a time whose year has four digits (slog reports
// others as an error in the line).
func fastRecord(r slog.Record) bool {
	if y := r.Time.Year(); !r.Time.IsZero() && (y < 0 || y >= 10000) {
		return false
	}
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		switch a.Value.Kind() {
		case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool, slog.KindDuration:
		case slog.KindFloat64:
			f := a.Value.Float64()
			ok = !math.IsNaN(f) && !math.IsInf(f, 0) // encoding/json refuses these
		default:
			ok = false
		}
		ok = ok && a.Key != ""
		return ok
	})
	return ok
}

func appendValue(b []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindString:
		return appendString(b, v.String())
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10)
	case slog.KindFloat64:
		return appendFloat(b, v.Float64())
	}
	panic("accesslog: appendValue: kind " + v.Kind().String()) // fastRecord let it through
}

// appendFloat formats f as encoding/json does (which slog.JSONHandler
// calls for every float): the shortest representation, in exponent form
// only below 1e-6 or from 1e21, with a one-digit negative exponent written
// e-7, not e-07.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a quoted JSON string escaped as slog's JSON
// handler escapes it: quote, backslash and control characters escaped
// (\n, \r and \t by name, the others as \u00XX), invalid UTF-8 as \ufffd,
// U+2028 and U+2029 as \u2028 and \u2029; <, > and & are left as they are.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
