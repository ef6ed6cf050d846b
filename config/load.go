package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// Load reads the configuration file at path and parses it with [Parse],
// naming it by its base name in errors. A file that cannot be read gives the
// error from os.ReadFile, wrapped; a file that does not load gives an
// [*Error].
func Load(path string) (*configv1.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and checks a configuration file held in data. name is the
// file's name; its base name is used in errors. The file is YAML or JSON.
// Parse returns the configuration, or nil and an [*Error] listing every
// problem found, in file order.
func Parse(name string, data []byte) (*configv1.Config, error) {
	file := filepath.Base(name)
	probs := &problems{}
	ps := newPositions(data)
	cfg := parse(data, probs)
	if ps.secondDoc > 0 {
		probs.add(sourceSyntax, nil, "a second YAML document (after ---): a configuration file holds one")
		probs.list[len(probs.list)-1].line = ps.secondDoc
	}
	if len(probs.list) > 0 {
		return nil, &Error{Errors: finish(file, ps, probs.list)}
	}
	return cfg, nil
}

// parse does the work of Parse, recording problems in probs. The
// configuration it returns is only meaningful when probs stays empty.
func parse(data []byte, probs *problems) *configv1.Config {
	if len(bytes.TrimSpace(data)) == 0 {
		probs.add(sourceSyntax, nil, "the file is empty")
		return nil
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		syntaxProblems(err, data, probs)
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		probs.add(sourceSyntax, nil, "%v", err)
		return nil
	}
	if doc == nil {
		probs.add(sourceSyntax, nil, "the file is empty (it holds no keys)")
		return nil
	}

	cfg := &configv1.Config{}
	md := cfg.ProtoReflect().Descriptor()
	w := &walker{probs: probs}
	clean, ok := w.message(nil, md, doc)
	if !ok {
		return nil
	}
	structural := len(probs.list) > 0
	cleanJSON, err := json.Marshal(clean)
	if err == nil {
		err = protojson.Unmarshal(cleanJSON, cfg)
	}
	if err != nil {
		// The walker should have caught anything protojson refuses.
		if !structural {
			probs.add(sourceStructure, nil, "%v", err)
		}
		return nil
	}
	validate(cfg, probs)
	check(cfg, probs, brokenNames(probs))
	return cfg
}

// syntaxLine finds "line N: reason" in a YAML parser's message.
var syntaxLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// parserProblems are the YAML parser's (not scanner's) messages, whose
// line go.yaml.in/yaml/v2 reports one too low.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// lineCount returns the number of lines in data.
func lineCount(data []byte) int {
	n := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return max(n, 1)
}

// syntaxProblems turns a YAML parser's error into problems, one per line
// the parser named.
func syntaxProblems(err error, data []byte, probs *problems) {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:")
	found := false
	for l := range strings.SplitSeq(msg, "\n") {
		m := syntaxLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if parserProblems[m[2]] {
			// go.yaml.in/yaml/v2 counts lines from 0 for the parser's
			// own errors (not the scanner's): report the line as people
			// count, but not past the end of the file.
			n = min(n+1, lineCount(data))
		}
		probs.add(sourceSyntax, nil, "%s", m[2])
		probs.list[len(probs.list)-1].line = n
		found = true
	}
	if !found {
		probs.add(sourceSyntax, nil, "%s", strings.TrimSpace(msg))
	}
}

// validate runs the protovalidate rules of config.proto and records each
// violation with its field path.
func validate(cfg *configv1.Config, probs *problems) {
	err := protovalidate.Validate(cfg)
	if err == nil {
		return
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		probs.add(sourceValidate, nil, "%v", err) // a rule that does not compile
		return
	}
	md := cfg.ProtoReflect().Descriptor()
	for _, v := range verr.Violations {
		var p path
		for _, e := range v.Proto.GetField().GetElements() {
			p = p.field(e.GetFieldName())
			switch {
			case e.HasIndex():
				p = p.index(int(e.GetIndex()))
			case e.HasStringKey():
				p = p.mapKey(e.GetStringKey())
			case e.HasIntKey():
				p = p.mapKey(strconv.FormatInt(e.GetIntKey(), 10))
			case e.HasUintKey():
				p = p.mapKey(strconv.FormatUint(e.GetUintKey(), 10))
			case e.HasBoolKey():
				p = p.mapKey(strconv.FormatBool(e.GetBoolKey()))
			}
		}
		rule := v.Proto.GetRuleId()
		fd := v.FieldDescriptor
		if rule == "repeated.unique" && fd != nil && fd.FullName() == "gatehouse.config.v1.Backend.endpoints" {
			continue // check.go names each duplicate endpoint
		}
		probs.add(sourceValidate, p, "%s", violationReason(md, p, v))
	}
}

// violationReason words a violation: protovalidate's message, with the
// offending value when it is a scalar, and plainer words for a missing
// value or oneof.
func violationReason(md protoreflect.MessageDescriptor, p path, v *protovalidate.Violation) string {
	msg := v.Proto.GetMessage()
	if msg == "" {
		msg = "[" + v.Proto.GetRuleId() + "]"
	}
	if v.Proto.GetRuleId() == "required" {
		if od := oneofAt(md, p); od != nil {
			return "one of " + oneofMembers(od) + " is required"
		}
	}
	if !v.FieldValue.IsValid() {
		return msg
	}
	// FieldValue is the value checked: for a rule on list items, the item.
	switch val := v.FieldValue.Interface().(type) {
	case string:
		switch v.Proto.GetRuleId() {
		case "string.min_len":
			if val == "" {
				return "required"
			}
		case "string.in":
			if in := inList(v.RuleValue); in != "" {
				return "want " + in + ", got " + describe(val)
			}
		case "string.pattern":
			if v.FieldDescriptor != nil {
				if want, ok := patternWords[v.FieldDescriptor.FullName()]; ok {
					return "want " + want + ", got " + describe(val)
				}
			}
		}
		return msg + ", got " + describe(val)
	case bool, int32, int64, uint32, uint64, float32, float64:
		return fmt.Sprintf("%s, got %v", msg, val)
	case protoreflect.Message:
		if d, ok := val.Interface().(*durationpb.Duration); ok {
			return msg + ", got " + d.AsDuration().String()
		}
	}
	return msg
}

// patternWords says in words what the regex pattern of a field asks for, so
// that errors do not quote regular expressions at users.
var patternWords = map[protoreflect.FullName]string{
	"gatehouse.config.v1.Listener.name":      `lower-case letters, digits, "-" and "_", starting and ending with a letter or digit`,
	"gatehouse.config.v1.Backend.name":       `lower-case letters, digits, "-" and "_", starting and ending with a letter or digit`,
	"gatehouse.config.v1.Route.name":         `lower-case letters, digits, "-" and "_", starting and ending with a letter or digit`,
	"gatehouse.config.v1.Match.method":       `a full method name "/pkg.Service/Method" or a trailing glob "/pkg.Service/Get*"`,
	"gatehouse.config.v1.Match.service":      `a service name "pkg.Service", a package glob "pkg.*", or "*"`,
	"gatehouse.config.v1.MetadataMatch.name": `a lower-case metadata key of letters, digits, "-", "_" and "."`,
}

// inList words the list of a string.in rule: "one of "shared" or "grpc"
// (or leave it out)" for ["", "shared", "grpc"].
func inList(rule protoreflect.Value) string {
	if !rule.IsValid() {
		return ""
	}
	list, ok := rule.Interface().(protoreflect.List)
	if !ok {
		return ""
	}
	var names []string
	optional := false
	for i := range list.Len() {
		s := list.Get(i).String()
		if s == "" {
			optional = true
			continue
		}
		names = append(names, strconv.Quote(s))
	}
	var b strings.Builder
	switch len(names) {
	case 0:
		return ""
	case 1:
		b.WriteString(names[0])
	default:
		b.WriteString("one of " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1])
	}
	if optional {
		b.WriteString(" (or leave it out)")
	}
	return b.String()
}

// oneofAt returns the oneof that p names, if its last element is a oneof.
func oneofAt(md protoreflect.MessageDescriptor, p path) protoreflect.OneofDescriptor {
	if len(p) == 0 {
		return nil
	}
	for _, e := range p[:len(p)-1] {
		if e.isIndex || e.isKey {
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(e.name))
		if fd == nil || fd.Message() == nil {
			return nil
		}
		md = fd.Message()
	}
	last := p[len(p)-1]
	if last.isIndex || last.isKey {
		return nil
	}
	return md.Oneofs().ByName(protoreflect.Name(last.name))
}
