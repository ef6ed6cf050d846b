package routing

import (
	"fmt"
	"hash/fnv"
	"strings"

	"cel.dev/cel-go/cel"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/internal/grpccode"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// action is what a route does with a call it takes: send it to a backend
// (one, or one side of a split), or answer it at the edge.
type action struct {
	backend string
	split   []side
	total   uint64
	sticky  cel.Program // sticky split key; nil for a random split
	direct  *status.Status
	mirror  *mirrorSpec
	md      *MetadataActions
	// rewrite
	service string // replaces the service part of the method
	method  string // replaces the whole method
}

// side is one side of a split: a backend and the upper bound of its range
// of [0, total).
type side struct {
	backend string
	upTo    uint64
}

type mirrorSpec struct {
	backend string
	// permille in parts per million, compared with a uniform draw.
	ppm uint64
}

// MetadataActions are changes a route makes to request metadata before it
// reaches the backend: removals first, then sets, then adds.
type MetadataActions struct {
	// Remove lists keys to remove.
	Remove []string
	// Set lists keys whose values replace the client's.
	Set []KeyValue
	// Add lists values added beside the client's.
	Add []KeyValue
}

// KeyValue is one metadata key and value.
type KeyValue struct {
	// Key is the lower-case metadata key.
	Key string
	// Value is its value.
	Value string
}

// Apply changes md in place.
func (a *MetadataActions) Apply(md metadata.MD) {
	if a == nil {
		return
	}
	for _, k := range a.Remove {
		delete(md, k)
	}
	for _, kv := range a.Set {
		md[kv.Key] = []string{kv.Value}
	}
	for _, kv := range a.Add {
		md[kv.Key] = append(md[kv.Key], kv.Value)
	}
}

func compileAction(rc *configv1.Route) (action, error) {
	a := action{backend: rc.GetBackend()}
	for _, wb := range rc.GetSplit() {
		a.total += uint64(wb.GetWeight())
		a.split = append(a.split, side{backend: wb.GetBackend(), upTo: a.total})
	}
	if len(a.split) > 0 && a.total == 0 {
		return a, fmt.Errorf("split: the weights add up to 0")
	}
	if k := rc.GetStickyKey(); k != "" {
		prg, err := compileCEL(k, cel.StringType)
		if err != nil {
			return a, fmt.Errorf("sticky_key: %w", err)
		}
		a.sticky = prg
	}
	if d := rc.GetDirectResponse(); d != nil {
		code, ok := grpccode.Parse(d.GetCode())
		if !ok {
			return a, fmt.Errorf("direct_response.code: unknown code %q", d.GetCode())
		}
		a.direct = status.New(code, d.GetMessage())
	}
	if m := rc.GetMirror(); m != nil && m.GetPercent() > 0 {
		a.mirror = &mirrorSpec{backend: m.GetBackend(), ppm: uint64(m.GetPercent() * 10000)}
	}
	if rm := rc.GetRequestMetadata(); rm != nil {
		md := &MetadataActions{}
		for _, k := range rm.GetRemove() {
			md.Remove = append(md.Remove, strings.ToLower(k))
		}
		for _, kv := range rm.GetSet() {
			md.Set = append(md.Set, KeyValue{strings.ToLower(kv.GetName()), kv.GetValue()})
		}
		for _, kv := range rm.GetAdd() {
			md.Add = append(md.Add, KeyValue{strings.ToLower(kv.GetName()), kv.GetValue()})
		}
		a.md = md
	}
	if rw := rc.GetRewrite(); rw != nil {
		a.service, a.method = rw.GetService(), rw.GetMethod()
	}
	return a, nil
}

// rewriteMethod returns the method the backend is called with.
func (a *action) rewriteMethod(fullMethod string) string {
	if a.method != "" {
		return a.method
	}
	if a.service != "" {
		_, m := splitMethod(fullMethod)
		return "/" + a.service + "/" + m
	}
	return ""
}

// pickBackend chooses the backend of a call: the route's backend, or a side
// of its split, by the hash of the sticky key when there is one, else by
// rnd (a uniform draw).
func (a *action) pickBackend(req *Request, vars *map[string]any, rnd func() uint64) (string, error) {
	if len(a.split) == 0 {
		return a.backend, nil
	}
	var x uint64
	if a.sticky != nil {
		if *vars == nil {
			*vars = activation(req)
		}
		key, err := evalKey(a.sticky, *vars)
		if err != nil {
			// No key (say, the metadata is absent): a random side.
			x = rnd()
		} else {
			h := fnv.New64a()
			h.Write([]byte(key))
			x = mix64(h.Sum64())
		}
	} else {
		x = rnd()
	}
	n := x % a.total
	for _, s := range a.split {
		if n < s.upTo {
			return s.backend, nil
		}
	}
	return a.split[len(a.split)-1].backend, nil
}

// mix64 spreads a hash's bits (SplitMix64 finaliser), so that keys that
// differ in little land on either side.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Target describes where the route sends calls, as the admin API shows it:
// the backend's name; "split a 90 / b 10" (with " sticky" when keyed);
// "direct response CODE"; followed by " + mirror shadow 5%" when the route
// mirrors.
func (r *Route) Target() string {
	rc := r.Config
	var t string
	switch {
	case rc.GetDirectResponse() != nil:
		t = "direct response " + rc.GetDirectResponse().GetCode()
	case len(rc.GetSplit()) > 0:
		parts := make([]string, 0, len(rc.GetSplit()))
		for _, w := range rc.GetSplit() {
			parts = append(parts, fmt.Sprintf("%s %d", w.GetBackend(), w.GetWeight()))
		}
		t = "split " + strings.Join(parts, " / ")
		if rc.GetStickyKey() != "" {
			t += " sticky"
		}
	default:
		t = rc.GetBackend()
	}
	if m := rc.GetMirror(); m != nil {
		t += fmt.Sprintf(" + mirror %s %g%%", m.GetBackend(), m.GetPercent())
	}
	return t
}
