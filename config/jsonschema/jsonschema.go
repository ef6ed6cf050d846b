// Package jsonschema writes the JSON Schema of gatehouse.yaml from the proto
// message that defines it, so that editors complete and check the file.
//
// The schema (draft-07, which every editor plugin reads) follows what the
// loader in package config accepts, and never less:
//
//   - keys are the proto field names in snake_case; the lowerCamelCase
//     spelling the loader also accepts validates too, but is not offered
//     for completion (it is a patternProperties alias);
//   - a field may be null (the loader leaves it unset) unless leaving it
//     unset is an error anyway;
//   - integers and floats may be written as numbers or as strings holding
//     one, as protojson allows; durations are strings such as "30s";
//   - field comments become descriptions, and protovalidate rules become
//     constraints where JSON Schema can say them (lengths, patterns, "in"
//     lists, numeric ranges, required fields and oneofs, list sizes,
//     uniqueness). What it cannot say (duration ranges, most CEL rules, and
//     the cross-references the loader checks) is written into the
//     description and listed by [Result.Unexpressed].
package jsonschema

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Draft is the JSON Schema dialect written.
const Draft = "http://json-schema.org/draft-07/schema#"

// Options name the schema.
type Options struct {
	// ID is the schema's $id. Optional.
	ID string
	// Title is the schema's title. Optional.
	Title string
}

// Result is a generated schema.
type Result struct {
	// JSON is the schema, indented, ending in a newline.
	JSON []byte
	// Unexpressed lists, one line per rule, the protovalidate rules that
	// the schema cannot say ("Listener.address: duration range ..."): the
	// loader checks them, the schema does not.
	Unexpressed []string
}

// Generate writes the JSON Schema of md, the root message of the file.
// Comments come from the proto source: protoPath is md's file as imported
// ("gatehouse/config/v1/config.proto") and src is its text. Rules come from
// md itself (the generated descriptor, whose options carry the
// buf.validate extensions as typed values).
func Generate(md protoreflect.MessageDescriptor, protoPath string, src []byte, opts Options) (*Result, error) {
	comments, err := readComments(protoPath, src)
	if err != nil {
		return nil, err
	}
	g := &generator{comments: comments, defs: map[protoreflect.FullName]bool{}}
	g.define(md)

	root := object{
		{"$schema", Draft},
	}
	if opts.ID != "" {
		root = append(root, kv{"$id", opts.ID})
	}
	if opts.Title != "" {
		root = append(root, kv{"title", opts.Title})
	}
	root = append(root, kv{"$ref", "#/definitions/" + defName(md)})
	defs := object{}
	for _, d := range g.order {
		defs = append(defs, kv{defName(d.md), d.schema})
	}
	root = append(root, kv{"definitions", defs})

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return &Result{JSON: buf.Bytes(), Unexpressed: g.unexpressed}, nil
}

// readComments compiles the proto source and returns the leading comment
// of every message and field, by full name. Imports other than the
// standard ones and buf/validate/validate.proto are not expected.
func readComments(protoPath string, src []byte) (map[protoreflect.FullName]string, error) {
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
			switch path {
			case protoPath:
				return protocompile.SearchResult{Source: bytes.NewReader(src)}, nil
			case validatepb.File_buf_validate_validate_proto.Path():
				return protocompile.SearchResult{Desc: validatepb.File_buf_validate_validate_proto}, nil
			}
			return protocompile.SearchResult{}, fmt.Errorf("jsonschema: %s imports %s, which the generator does not know", protoPath, path)
		})),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := c.Compile(context.Background(), protoPath)
	if err != nil {
		return nil, fmt.Errorf("jsonschema: %w", err)
	}
	out := map[protoreflect.FullName]string{}
	f := files[0]
	locs := f.SourceLocations()
	var walk func(protoreflect.MessageDescriptors)
	walk = func(mds protoreflect.MessageDescriptors) {
		for i := range mds.Len() {
			m := mds.Get(i)
			out[m.FullName()] = cleanComment(locs.ByDescriptor(m).LeadingComments)
			for j := range m.Fields().Len() {
				fd := m.Fields().Get(j)
				out[fd.FullName()] = cleanComment(locs.ByDescriptor(fd).LeadingComments)
			}
			walk(m.Messages())
		}
	}
	walk(f.Messages())
	return out, nil
}

// cleanComment drops the one space after "//" and surrounding blank lines.
func cleanComment(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(strings.TrimPrefix(l, " "), " ")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// kv and object keep keys in the order written, so that the schema reads
// in proto order and regenerates byte for byte.
type kv struct {
	k string
	v any
}

type object []kv

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshal(e.k)
		if err != nil {
			return nil, err
		}
		v, err := marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// get returns the value of key k, or nil.
func (o object) get(k string) any {
	for _, e := range o {
		if e.k == k {
			return e.v
		}
	}
	return nil
}

type definition struct {
	md     protoreflect.MessageDescriptor
	schema object
}

type generator struct {
	comments    map[protoreflect.FullName]string
	defs        map[protoreflect.FullName]bool
	order       []*definition
	unexpressed []string
}

// defName names a message's definition: its full name without the package.
func defName(md protoreflect.MessageDescriptor) string {
	return strings.TrimPrefix(string(md.FullName()), string(md.ParentFile().Package())+".")
}

func (g *generator) note(fd protoreflect.FieldDescriptor, format string, args ...any) {
	g.unexpressed = append(g.unexpressed, fmt.Sprintf("%s.%s: ", defName(fd.ContainingMessage()), fd.Name())+fmt.Sprintf(format, args...))
}

// define adds md's definition (once) and those of the messages it uses.
func (g *generator) define(md protoreflect.MessageDescriptor) {
	if g.defs[md.FullName()] {
		return
	}
	g.defs[md.FullName()] = true
	d := &definition{md: md}
	g.order = append(g.order, d)

	props := object{}
	aliases := object{}
	var required []string
	var all []any
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		fs, req := g.field(fd)
		props = append(props, kv{name, fs})
		alts := aliasesOf(fd)
		for _, a := range alts {
			aliases = append(aliases, kv{"^" + regexp.QuoteMeta(a) + "$", object{{"$ref", "#/definitions/" + defName(md) + "/properties/" + name}}})
			// One field, two spellings: the loader takes only one.
			all = append(all, object{{"not", object{{"required", []string{name, a}}}}})
		}
		if req {
			if len(alts) == 0 {
				required = append(required, name)
			} else {
				all = append(all, present(append([]string{name}, alts...)))
			}
		}
	}
	for i := range md.Oneofs().Len() {
		od := md.Oneofs().Get(i)
		if od.IsSynthetic() {
			continue
		}
		var branches []any
		for j := range od.Fields().Len() {
			fd := od.Fields().Get(j)
			branches = append(branches, present(append([]string{string(fd.Name())}, aliasesOf(fd)...)))
		}
		oreq := false
		if o, ok := proto.GetExtension(od.Options(), validatepb.E_Oneof).(*validatepb.OneofRules); ok && o.GetRequired() {
			oreq = true
		}
		if !oreq {
			branches = append([]any{object{{"not", object{{"anyOf", branches}}}}}, branches...)
		}
		all = append(all, object{{"oneOf", branches}})
	}

	s := object{{"type", "object"}}
	if c := g.comments[md.FullName()]; c != "" {
		s = append(s, kv{"description", c})
	}
	s = append(s, kv{"properties", props})
	if len(aliases) > 0 {
		s = append(s, kv{"patternProperties", aliases})
	}
	s = append(s, kv{"additionalProperties", false})
	if len(required) > 0 {
		s = append(s, kv{"required", required})
	}
	if len(all) > 0 {
		s = append(s, kv{"allOf", all})
	}
	d.schema = s
}

// present is a schema that holds when one of the names (spellings of one
// field) is given with a value other than null.
func present(names []string) object {
	var alts []any
	for _, n := range names {
		alts = append(alts, object{
			{"required", []string{n}},
			{"properties", object{{n, object{{"not", object{{"type", "null"}}}}}}},
		})
	}
	if len(alts) == 1 {
		return alts[0].(object)
	}
	return object{{"anyOf", alts}}
}

// aliasesOf returns the other keys the loader takes for fd: its
// lowerCamelCase JSON name, and "true" for a field named "on" (YAML 1.1
// reads the key on as the boolean true).
func aliasesOf(fd protoreflect.FieldDescriptor) []string {
	var out []string
	if j := fd.JSONName(); j != string(fd.Name()) {
		out = append(out, j)
	}
	if fd.Name() == "on" {
		out = append(out, "true")
	}
	return out
}

// field returns the schema of a field, and whether the field must be given
// (leaving it out is an error, so null is no value for it either).
func (g *generator) field(fd protoreflect.FieldDescriptor) (object, bool) {
	rules, _ := proto.GetExtension(fd.Options(), validatepb.E_Field).(*validatepb.FieldRules)
	desc := g.comments[fd.FullName()]
	var notes []string
	var s object
	required := false
	switch {
	case fd.IsList():
		r := rules.GetRepeated()
		item, n := g.single(fd, r.GetItems())
		notes = append(notes, n...)
		s = object{{"type", []string{"array", "null"}}, {"items", item}}
		if r.HasMinItems() && r.GetMinItems() > 0 {
			s = append(s, kv{"minItems", r.GetMinItems()})
			required = true
		}
		if r.HasMaxItems() {
			s = append(s, kv{"maxItems", r.GetMaxItems()})
		}
		if r.GetUnique() {
			s = append(s, kv{"uniqueItems", true})
		}
	case fd.IsMap():
		r := rules.GetMap()
		val, n := g.single(fd.MapValue(), r.GetValues())
		notes = append(notes, n...)
		s = object{{"type", []string{"object", "null"}}}
		if names := mapKeys(fd.MapKey()); names != nil {
			s = append(s, kv{"propertyNames", names})
		}
		s = append(s, kv{"additionalProperties", val})
		if r.HasMinPairs() && r.GetMinPairs() > 0 {
			s = append(s, kv{"minProperties", r.GetMinPairs()})
			required = true
		}
		if r.HasMaxPairs() {
			s = append(s, kv{"maxProperties", r.GetMaxPairs()})
		}
	default:
		var n []string
		s, n = g.single(fd, rules)
		notes = append(notes, n...)
		switch {
		case rules.GetRequired():
			required = true
		case !fd.HasPresence() && zeroRejected(fd, rules):
			// protovalidate checks implicit-presence fields even when
			// unset: a zero value its rules refuse makes the key required.
			required = true
		}
	}
	if !required {
		s = nullable(s)
	} else {
		s = nonNull(s)
	}
	for _, c := range rules.GetCel() {
		if pat, ok := celPrefix(c.GetExpression()); ok {
			s = append(s, kv{"not", object{{"pattern", pat}}})
			continue
		}
		notes = append(notes, c.GetMessage())
		g.note(fd, "CEL rule %q", c.GetId())
	}
	if len(notes) > 0 {
		desc = strings.TrimSpace(desc + "\n\n" + strings.Join(notes, "\n"))
	}
	if desc != "" {
		s = append(object{{"description", desc}}, s...)
	}
	return s, required
}

// single returns the schema of one value of fd (a list item, a map value
// or a singular field), and notes on rules it cannot express.
func (g *generator) single(fd protoreflect.FieldDescriptor, rules *validatepb.FieldRules) (object, []string) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		if md.FullName() == "google.protobuf.Duration" {
			return g.duration(fd, rules.GetDuration())
		}
		if md.ParentFile().Package() == "google.protobuf" {
			return object{}, nil // other well-known types: protojson decides
		}
		g.define(md)
		return object{{"$ref", "#/definitions/" + defName(md)}}, nil
	case protoreflect.StringKind:
		return g.str(fd, rules.GetString()), nil
	case protoreflect.BytesKind:
		return object{{"type", "string"}, {"contentEncoding", "base64"}}, nil
	case protoreflect.BoolKind:
		s := object{{"type", "boolean"}}
		if b := rules.GetBool(); b != nil && b.HasConst() {
			s = append(s, kv{"enum", []any{b.GetConst()}})
		}
		return s, nil
	case protoreflect.EnumKind:
		var names []any
		for i := range fd.Enum().Values().Len() {
			names = append(names, string(fd.Enum().Values().Get(i).Name()))
		}
		return object{{"anyOf", []any{object{{"type", "string"}, {"enum", names}}, object{{"type", "integer"}}}}}, nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return g.number(fd, rules), nil
	default:
		return g.integer(fd, rules), nil
	}
}

// str is a string field's schema.
func (g *generator) str(fd protoreflect.FieldDescriptor, r *validatepb.StringRules) object {
	s := object{{"type", "string"}}
	if r == nil {
		return s
	}
	if r.HasMinLen() && r.GetMinLen() > 0 {
		s = append(s, kv{"minLength", r.GetMinLen()})
	}
	if r.HasMaxLen() {
		s = append(s, kv{"maxLength", r.GetMaxLen()})
	}
	if r.HasLen() {
		s = append(s, kv{"minLength", r.GetLen()}, kv{"maxLength", r.GetLen()})
	}
	if r.HasPattern() {
		s = append(s, kv{"pattern", r.GetPattern()})
	}
	if r.HasPrefix() {
		s = append(s, kv{"pattern", "^" + regexp.QuoteMeta(r.GetPrefix())})
	}
	if r.HasConst() {
		s = append(s, kv{"enum", []any{r.GetConst()}})
	}
	if in := r.GetIn(); len(in) > 0 {
		// "" (leave it out) last, so that editors offer the real values
		// first.
		var vals []any
		empty := false
		for _, v := range in {
			if v == "" {
				empty = true
				continue
			}
			vals = append(vals, v)
		}
		if empty {
			vals = append(vals, "")
		}
		s = append(s, kv{"enum", vals})
	}
	if len(r.GetNotIn()) > 0 {
		s = append(s, kv{"not", object{{"enum", r.GetNotIn()}}})
	}
	for _, other := range []struct {
		has  bool
		name string
	}{
		{r.HasSuffix(), "suffix"}, {r.HasContains(), "contains"}, {r.HasNotContains(), "not_contains"},
		{r.HasMinBytes() || r.HasMaxBytes() || r.HasLenBytes(), "byte lengths"},
		{r.GetWellKnown() != nil, "well-known format"},
	} {
		if other.has {
			g.note(fd, "string %s", other.name)
		}
	}
	return s
}

// numeric matches what the loader takes as a number written as a string
// (the range is checked when it loads).
const (
	integerString = `^\s*[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*$`
	floatString   = `^([-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|NaN|-?Infinity)$`
)

// bounds are a numeric range: nil ends are open.
type bounds struct {
	min, max         *float64
	exclMin, exclMax bool
}

func f64(v float64) *float64 { return &v }

// tighten narrows b by a gte/gt/lte/lt rule.
func (b *bounds) tighten(gte, gt, lte, lt *float64) {
	if gte != nil && (b.min == nil || *gte > *b.min) {
		b.min, b.exclMin = gte, false
	}
	if gt != nil && (b.min == nil || *gt >= *b.min) {
		b.min, b.exclMin = gt, true
	}
	if lte != nil && (b.max == nil || *lte < *b.max) {
		b.max, b.exclMax = lte, false
	}
	if lt != nil && (b.max == nil || *lt <= *b.max) {
		b.max, b.exclMax = lt, true
	}
}

func (b bounds) add(s object) object {
	num := func(f float64) any {
		if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
		}
		return f
	}
	if b.min != nil {
		if b.exclMin {
			s = append(s, kv{"exclusiveMinimum", num(*b.min)})
		} else {
			s = append(s, kv{"minimum", num(*b.min)})
		}
	}
	if b.max != nil {
		if b.exclMax {
			s = append(s, kv{"exclusiveMaximum", num(*b.max)})
		} else {
			s = append(s, kv{"maximum", num(*b.max)})
		}
	}
	return s
}

// allows reports whether v is inside b.
func (b bounds) allows(v float64) bool {
	if b.min != nil && (v < *b.min || b.exclMin && v == *b.min) {
		return false
	}
	if b.max != nil && (v > *b.max || b.exclMax && v == *b.max) {
		return false
	}
	return true
}

// intBounds returns the range of an integer field: its kind's, narrowed by
// its rules, and the const or in list if it has one.
func intBounds(fd protoreflect.FieldDescriptor, rules *validatepb.FieldRules) (bounds, []any) {
	var b bounds
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		b = bounds{min: f64(math.MinInt32), max: f64(math.MaxInt32)}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		b = bounds{min: f64(0), max: f64(math.MaxUint32)}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = bounds{min: f64(0)}
	}
	ptr := func(has bool, v float64) *float64 {
		if !has {
			return nil
		}
		return &v
	}
	var enum []any
	switch {
	case rules.GetUint32() != nil:
		r := rules.GetUint32()
		b.tighten(ptr(r.HasGte(), float64(r.GetGte())), ptr(r.HasGt(), float64(r.GetGt())), ptr(r.HasLte(), float64(r.GetLte())), ptr(r.HasLt(), float64(r.GetLt())))
		if r.HasConst() {
			enum = []any{r.GetConst()}
		}
		for _, v := range r.GetIn() {
			enum = append(enum, v)
		}
	case rules.GetUint64() != nil:
		r := rules.GetUint64()
		b.tighten(ptr(r.HasGte(), float64(r.GetGte())), ptr(r.HasGt(), float64(r.GetGt())), ptr(r.HasLte(), float64(r.GetLte())), ptr(r.HasLt(), float64(r.GetLt())))
		if r.HasConst() {
			enum = []any{r.GetConst()}
		}
		for _, v := range r.GetIn() {
			enum = append(enum, v)
		}
	case rules.GetInt32() != nil:
		r := rules.GetInt32()
		b.tighten(ptr(r.HasGte(), float64(r.GetGte())), ptr(r.HasGt(), float64(r.GetGt())), ptr(r.HasLte(), float64(r.GetLte())), ptr(r.HasLt(), float64(r.GetLt())))
		if r.HasConst() {
			enum = []any{r.GetConst()}
		}
		for _, v := range r.GetIn() {
			enum = append(enum, v)
		}
	case rules.GetInt64() != nil:
		r := rules.GetInt64()
		b.tighten(ptr(r.HasGte(), float64(r.GetGte())), ptr(r.HasGt(), float64(r.GetGt())), ptr(r.HasLte(), float64(r.GetLte())), ptr(r.HasLt(), float64(r.GetLt())))
		if r.HasConst() {
			enum = []any{r.GetConst()}
		}
		for _, v := range r.GetIn() {
			enum = append(enum, v)
		}
	}
	return b, enum
}

// integer is an integer field's schema: a number in range, or a string
// that holds a number.
func (g *generator) integer(fd protoreflect.FieldDescriptor, rules *validatepb.FieldRules) object {
	b, enum := intBounds(fd, rules)
	s := object{{"type", []string{"integer", "string"}}}
	s = b.add(s)
	s = append(s, kv{"pattern", integerString})
	if enum != nil {
		g.note(fd, "integer in/const")
	}
	return s
}

// number is a float or double field's schema.
func (g *generator) number(fd protoreflect.FieldDescriptor, rules *validatepb.FieldRules) object {
	var b bounds
	ptr := func(has bool, v float64) *float64 {
		if !has {
			return nil
		}
		return &v
	}
	if r := rules.GetDouble(); r != nil {
		b.tighten(ptr(r.HasGte(), r.GetGte()), ptr(r.HasGt(), r.GetGt()), ptr(r.HasLte(), r.GetLte()), ptr(r.HasLt(), r.GetLt()))
	}
	if r := rules.GetFloat(); r != nil {
		b.tighten(ptr(r.HasGte(), float64(r.GetGte())), ptr(r.HasGt(), float64(r.GetGt())), ptr(r.HasLte(), float64(r.GetLte())), ptr(r.HasLt(), float64(r.GetLt())))
	}
	s := object{{"type", []string{"number", "string"}}}
	s = b.add(s)
	return append(s, kv{"pattern", floatString})
}

// DurationPattern matches what time.ParseDuration reads ("250ms",
// "1h30m", "0.25s", "0"). The loader reads durations with it.
const DurationPattern = `^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

// duration is a Duration field's schema: a string, with the range in words.
func (g *generator) duration(fd protoreflect.FieldDescriptor, r *validatepb.DurationRules) (object, []string) {
	s := object{{"type", "string"}, {"pattern", DurationPattern}}
	if r == nil {
		return s, nil
	}
	var lo, hi string
	switch {
	case r.HasGte():
		lo = "at least " + words(r.GetGte().AsDuration())
	case r.HasGt():
		lo = "more than " + words(r.GetGt().AsDuration())
	}
	switch {
	case r.HasLte():
		hi = "at most " + words(r.GetLte().AsDuration())
	case r.HasLt():
		hi = "less than " + words(r.GetLt().AsDuration())
	}
	var parts []string
	for _, p := range []string{lo, hi} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return s, nil
	}
	g.note(fd, "duration range (%s)", strings.Join(parts, ", "))
	return s, []string{"Allowed: " + strings.Join(parts, ", ") + "."}
}

// words writes d as people do: 1h, 5m, 30s, 250ms, 0s.
func words(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "us"}} {
		if d >= u.d && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.name
		}
	}
	if d == 0 {
		return "0s"
	}
	return d.String()
}

// zeroRejected reports whether the rules of an implicit-presence scalar
// refuse its zero value, which protovalidate checks even when the key is
// left out.
func zeroRejected(fd protoreflect.FieldDescriptor, rules *validatepb.FieldRules) bool {
	if rules == nil || rules.GetIgnore() == validatepb.Ignore_IGNORE_IF_ZERO_VALUE || rules.GetIgnore() == validatepb.Ignore_IGNORE_ALWAYS {
		return false
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		r := rules.GetString()
		if r == nil {
			return false
		}
		switch {
		case r.GetMinLen() > 0, r.HasLen() && r.GetLen() > 0, r.HasConst() && r.GetConst() != "":
			return true
		case r.HasPattern() && !regexp.MustCompile(r.GetPattern()).MatchString(""):
			return true
		case r.HasPrefix() && r.GetPrefix() != "":
			return true
		}
		if in := r.GetIn(); len(in) > 0 {
			for _, v := range in {
				if v == "" {
					return false
				}
			}
			return true
		}
	case protoreflect.BoolKind:
		return rules.GetBool().HasConst() && rules.GetBool().GetConst()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		var b bounds
		if r := rules.GetDouble(); r != nil {
			p := func(has bool, v float64) *float64 {
				if has {
					return &v
				}
				return nil
			}
			b.tighten(p(r.HasGte(), r.GetGte()), p(r.HasGt(), r.GetGt()), p(r.HasLte(), r.GetLte()), p(r.HasLt(), r.GetLt()))
		}
		return !b.allows(0)
	case protoreflect.EnumKind, protoreflect.BytesKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return false
	default:
		b, enum := intBounds(fd, rules)
		if !b.allows(0) {
			return true
		}
		if enum != nil {
			for _, v := range enum {
				if fmt.Sprint(v) == "0" {
					return false
				}
			}
			return true
		}
	}
	return false
}

// mapKeys constrains the keys of a map whose keys are not strings.
func mapKeys(fd protoreflect.FieldDescriptor) object {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return nil
	case protoreflect.BoolKind:
		return object{{"enum", []string{"true", "false"}}}
	default:
		return object{{"pattern", `^-?[0-9]+$`}}
	}
}

// nullable lets s also be null: a null value leaves a field unset.
func nullable(s object) object {
	out := make(object, 0, len(s))
	for _, e := range s {
		switch e.k {
		case "type":
			switch t := e.v.(type) {
			case string:
				e.v = []string{t, "null"}
			case []string:
				if t[len(t)-1] != "null" {
					e.v = append(append([]string(nil), t...), "null")
				}
			}
		case "enum":
			e.v = append(append([]any(nil), e.v.([]any)...), nil)
		case "$ref": // a message, or null
			return object{{"anyOf", []any{object{e}, object{{"type", "null"}}}}}
		}
		out = append(out, e)
	}
	if s.get("type") == nil && len(s) > 0 {
		// An enum-kind field's anyOf: add null beside it.
		if a, ok := s.get("anyOf").([]any); ok {
			return object{{"anyOf", append(a, object{{"type", "null"}})}}
		}
	}
	return out
}

// nonNull returns s for a field that must hold a value. Lists and maps
// written as null are left unset, which their rules refuse.
func nonNull(s object) object {
	out := make(object, 0, len(s))
	for _, e := range s {
		if e.k == "$ref" {
			// Beside $ref, draft-07 ignores every keyword (the
			// description too): wrap it.
			return object{{"allOf", []any{object{e}}}}
		}
		if e.k == "type" {
			if t, ok := e.v.([]string); ok && t[len(t)-1] == "null" {
				e.v = t[:len(t)-1]
				if len(t) == 2 {
					e.v = t[0]
				}
			}
		}
		out = append(out, e)
	}
	return out
}

// celPrefix turns the CEL rule "!this.startsWith('x')" into a pattern
// that a refused value matches.
func celPrefix(expr string) (string, bool) {
	m := regexp.MustCompile(`^!this\.startsWith\('([^'\\]*)'\)$`).FindStringSubmatch(strings.TrimSpace(expr))
	if m == nil {
		return "", false
	}
	return "^" + regexp.QuoteMeta(m[1]), true
}

// The $id and title of config/gatehouse.schema.json.
const (
	ID    = "https://raw.githubusercontent.com/gatehouse-dev/gatehouse/main/config/gatehouse.schema.json"
	Title = "Gatehouse configuration (gatehouse.yaml)"
)
