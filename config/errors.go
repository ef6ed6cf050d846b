package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is the error that [Load] and [Parse] return when a configuration file
// does not load. It lists every problem found, in file order. Use errors.As
// to get at the list:
//
//	var cerr *config.Error
//	if errors.As(err, &cerr) {
//		for _, fe := range cerr.Errors { ... }
//	}
type Error struct {
	// Errors holds one entry per problem, in file order. It is never empty.
	Errors []FieldError
}

// Error returns one line per problem, joined by newlines, each formatted as
// FieldError.Error does.
func (e *Error) Error() string {
	var b strings.Builder
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap returns the problems as errors, so errors.As can find a FieldError.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// FieldError is one problem in a configuration file.
type FieldError struct {
	// File is the base name of the file.
	File string
	// Line is the 1-based line of the file that the problem is at or nearest
	// to, or 0 when it is not known. It is not part of the text of Error,
	// except for syntax errors, which have no Path.
	Line int
	// Path is the field path, for example "routes[2].match.metadata[0].regex",
	// written with the proto (snake_case) field names; an unknown key is
	// written as it appears in the file. Path is empty for a problem with the
	// file as a whole (a syntax error, an empty file).
	Path string
	// Reason says what is wrong, on one line.
	Reason string
}

// Error returns "FILE: PATH: reason". When Path is empty, PATH is "line N"
// for a syntax error at a known line and "(root)" otherwise.
func (e FieldError) Error() string {
	loc := e.Path
	if loc == "" {
		if e.Line > 0 {
			loc = "line " + strconv.Itoa(e.Line)
		} else {
			loc = "(root)"
		}
	}
	return e.File + ": " + loc + ": " + e.Reason
}

// pathElem is one step of a field path: a field (or unknown key) name, a
// list index or a map key.
type pathElem struct {
	name    string // field name or unknown key; empty for an index or a map key
	index   int    // list index, when isIndex
	key     string // map key, when isKey
	isIndex bool
	isKey   bool
}

// path is a field path from the top of the document.
type path []pathElem

// field returns p extended by a field or key name.
func (p path) field(name string) path {
	return append(p[:len(p):len(p)], pathElem{name: name})
}

// index returns p extended by a list index.
func (p path) index(i int) path {
	return append(p[:len(p):len(p)], pathElem{index: i, isIndex: true})
}

// mapKey returns p extended by a map key.
func (p path) mapKey(k string) path {
	return append(p[:len(p):len(p)], pathElem{key: k, isKey: true})
}

// under reports whether p equals q or lies below it.
func (p path) under(q path) bool {
	if len(p) < len(q) {
		return false
	}
	for i := range q {
		if p[i] != q[i] {
			return false
		}
	}
	return true
}

// String renders p as "routes[2].match.metadata[0].regex". A name that is
// not a plain identifier is written as a quoted map key, ["like this"], so
// that a path never holds spaces, colons or newlines.
func (p path) String() string {
	var b strings.Builder
	for _, e := range p {
		switch {
		case e.isIndex:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
		case e.isKey || !isIdent(e.name):
			k := e.key
			if !e.isKey {
				k = e.name
			}
			b.WriteString("[")
			b.WriteString(strconv.Quote(k))
			b.WriteString("]")
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.name)
		}
	}
	return b.String()
}

// isIdent reports whether s is a non-empty [A-Za-z_][A-Za-z0-9_]* name.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// oneLine makes s safe for one line of an error: newlines and other control
// characters are escaped.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// problem is a FieldError in the making: its path is still structured, and
// it remembers where it came from, for ordering and de-duplication.
type problem struct {
	path   path
	reason string
	line   int // syntax errors only: the line the YAML parser named
	source source
	seq    int // generation order, the last tie-breaker
}

// source says which stage found a problem. Lower sources win when two
// stages report the same field.
type source int

const (
	sourceSyntax    source = iota // YAML syntax, empty file
	sourceStructure               // unknown keys, wrong types
	sourceCheck                   // cross-reference checks in check.go
	sourceValidate                // protovalidate rules
)

// problems collects problems.
type problems struct {
	list []problem
}

// add records a problem found by src at p.
func (ps *problems) add(src source, p path, format string, args ...any) {
	ps.list = append(ps.list, problem{
		path:   p,
		reason: oneLine(fmt.Sprintf(format, args...)),
		source: src,
		seq:    len(ps.list),
	})
}
