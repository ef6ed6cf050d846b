package transcode

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// PopulateParams sets the fields of msg, a request of a compiled-in or
// runtime-schema method, from REST path parameters (by field path, as
// "book.id") and query parameters, as the REST handlers of Register do:
// grpc-gateway's parsers, and enum fields of runtime schemas by name or
// number (grpc-gateway's parsers look enums up among compiled-in types
// only). A path parameter naming a field msg has already (from the body)
// is an error. Query parameters that name a path parameter or a field listed in
// exclude (a body field) are ignored; query may be nil.
func PopulateParams(msg protoreflect.Message, path map[string]string, query url.Values, exclude ...string) error {
	var seqs [][]string
	for _, name := range sortedKeys(path) {
		fp, err := fieldPath(msg.Descriptor(), name)
		if err != nil {
			return fmt.Errorf("path parameter %q: %w", name, err)
		}
		p := param{name: name, path: fp, nested: len(fp) > 1}
		if ed := fp[len(fp)-1].Enum(); ed != nil {
			p.enum = enumValues(ed)
		}
		if hasPath(msg, fp) {
			return fmt.Errorf("field %q is set by both the path and the body", name)
		}
		if err := p.set(msg, path[name]); err != nil {
			return fmt.Errorf("path parameter %q: %w", name, err)
		}
		seqs = append(seqs, strings.Split(name, "."))
	}
	if len(query) == 0 {
		return nil
	}
	for _, e := range exclude {
		if e == "" || e == "*" {
			continue
		}
		seqs = append(seqs, strings.Split(e, "."))
	}
	b := &binding{filter: utilities.NewDoubleArray(seqs)}
	if err := b.query(msg, query); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	return nil
}

// jsonPb finds the JSON marshaler of m, which may wrap it
// (runtime.HTTPBodyMarshaler, or any marshaler with an Unwrap method).
func jsonPb(m runtime.Marshaler) (*runtime.JSONPb, bool) {
	for range 8 { // wrappers of wrappers, bounded
		switch v := m.(type) {
		case *runtime.JSONPb:
			return v, true
		case *runtime.HTTPBodyMarshaler:
			m = v.Marshaler
		case interface{ Unwrap() runtime.Marshaler }:
			m = v.Unwrap()
		default:
			return nil, false
		}
	}
	return nil, false
}
