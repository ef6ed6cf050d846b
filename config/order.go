package config

import (
	"bytes"
	"cmp"
	"slices"

	yaml3 "go.yaml.in/yaml/v3"
)

// positions finds where field paths are in the file, to report problems in
// file order. It reads the file a second time with a YAML parser that keeps
// line numbers; the values themselves come from sigs.k8s.io/yaml.
type positions struct {
	root      *yaml3.Node // nil when the file did not parse
	secondDoc int         // the line of a second YAML document, or 0
}

// newPositions parses data. On any failure it returns positions that know
// nothing, and problems keep the order in which they were found.
func newPositions(data []byte) positions {
	dec := yaml3.NewDecoder(bytes.NewReader(data))
	var doc yaml3.Node
	if err := dec.Decode(&doc); err != nil || doc.Kind != yaml3.DocumentNode || len(doc.Content) == 0 {
		return positions{}
	}
	ps := positions{root: doc.Content[0]}
	var more yaml3.Node
	if err := dec.Decode(&more); err == nil {
		ps.secondDoc = more.Line
	}
	return ps
}

// pos is a position in the file; the zero pos is before everything.
type pos struct {
	line, col int
	// late is 1 for a field that is missing from the file: it is placed
	// at the end of its parent, after everything the parent holds.
	late int
}

// find returns the position of p in the file: the key of a field, or the
// element of a list. A field that is missing is placed at the end of the
// deepest parent that is in the file.
func (ps positions) find(p path) pos {
	n := ps.root
	if n == nil {
		return pos{}
	}
	var at pos
	for _, e := range p {
		n = deref(n)
		var next *yaml3.Node
		switch {
		case e.isIndex:
			if n.Kind == yaml3.SequenceNode && e.index < len(n.Content) {
				next = n.Content[e.index]
				at = pos{line: next.Line, col: next.Column}
			}
		case n.Kind == yaml3.MappingNode:
			name := e.name
			if e.isKey {
				name = e.key
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Value == name || (!e.isKey && k.Value == lowerCamel(name)) {
					next = n.Content[i+1]
					at = pos{line: k.Line, col: k.Column}
					break
				}
			}
		}
		if next == nil {
			last := lastNode(n)
			return pos{line: last.Line, col: last.Column, late: 1}
		}
		n = next
	}
	return at
}

// lastNode returns the last node written inside n.
func lastNode(n *yaml3.Node) *yaml3.Node {
	for i := 0; len(n.Content) > 0 && i < 1000; i++ {
		n = n.Content[len(n.Content)-1]
	}
	return n
}

// deref follows an alias to the node it names.
func deref(n *yaml3.Node) *yaml3.Node {
	for i := 0; n != nil && n.Kind == yaml3.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// lowerCamel turns a snake_case field name into its JSON name, the way
// protoc does.
func lowerCamel(s string) string {
	b := make([]byte, 0, len(s))
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_':
			upper = true
		case upper && 'a' <= c && c <= 'z':
			b = append(b, c-'a'+'A')
			upper = false
		default:
			b = append(b, c)
			upper = false
		}
	}
	return string(b)
}

// finish turns problems into the FieldErrors of an Error: it drops what an
// earlier stage already said about the same field (or about a field above
// it, for structural problems), and sorts by position in the file.
func finish(file string, ps positions, list []problem) []FieldError {
	// Earlier stages win: sort by source first, then keep the first word
	// on each path.
	slices.SortStableFunc(list, func(a, b problem) int { return cmp.Compare(a.source, b.source) })
	var kept []problem
	seen := make(map[string]bool)
	for _, pr := range list {
		key := pr.path.String()
		if pr.source != sourceSyntax && seen[key] {
			continue
		}
		if pr.source > sourceStructure && slices.ContainsFunc(kept, func(k problem) bool {
			return k.source == sourceStructure && pr.path.under(k.path)
		}) {
			continue
		}
		seen[key] = true
		kept = append(kept, pr)
	}
	type placed struct {
		problem
		at pos
	}
	out := make([]placed, len(kept))
	for i, pr := range kept {
		at := ps.find(pr.path)
		if pr.line > 0 {
			at = pos{line: pr.line}
		}
		out[i] = placed{pr, at}
	}
	slices.SortStableFunc(out, func(a, b placed) int {
		return cmp.Or(
			cmp.Compare(a.at.line, b.at.line),
			cmp.Compare(a.at.col, b.at.col),
			cmp.Compare(a.at.late, b.at.late),
			cmp.Compare(len(a.path), len(b.path)),
			cmp.Compare(a.seq, b.seq),
		)
	})
	errs := make([]FieldError, len(out))
	for i, pl := range out {
		line := pl.at.line
		errs[i] = FieldError{File: file, Line: line, Path: pl.path.String(), Reason: pl.reason}
	}
	return errs
}
