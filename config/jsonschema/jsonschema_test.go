package jsonschema_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/config/jsonschema"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/loader_only.golden")

const (
	schemaFile = "../gatehouse.schema.json"
	protoFile  = "../../proto/gatehouse/config/v1/config.proto"
)

// TestSchemaIsCurrent regenerates the schema and compares it with the
// committed file (CI also checks this, in .ci/run).
func TestSchemaIsCurrent(t *testing.T) {
	src, err := os.ReadFile(protoFile)
	if err != nil {
		t.Fatal(err)
	}
	res, err := jsonschema.Generate((&configv1.Config{}).ProtoReflect().Descriptor(), configv1.File_gatehouse_config_v1_config_proto.Path(), src,
		jsonschema.Options{ID: jsonschema.ID, Title: jsonschema.Title})
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.JSON, committed) {
		t.Errorf("config/gatehouse.schema.json is not what config.proto gives: run `go run ./cmd/genschema` from the module root")
	}
	// Every rule the schema leaves out must at least be said in words.
	for _, u := range res.Unexpressed {
		if !strings.Contains(u, "duration range") && !strings.Contains(u, "CEL rule") {
			t.Errorf("a rule the schema neither expresses nor describes: %s", u)
		}
	}
}

// compile reads the committed schema.
func compile(t *testing.T) *sj.Schema {
	t.Helper()
	f, err := os.Open(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := sj.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := sj.NewCompiler()
	c.AssertContent()
	if err := c.AddResource(jsonschema.ID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(jsonschema.ID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// instance converts a YAML or JSON file to a JSON Schema instance the way
// an editor sees it. ok is false when the file does not parse at all.
func instance(data []byte) (any, bool) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, false
	}
	v, err := sj.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, false
	}
	return v, true
}

// verdict is what the loader and the schema say of one file.
type verdict struct {
	loaderErr error
	schemaErr error
	parses    bool
}

func judge(t *testing.T, s *sj.Schema, name string, data []byte) verdict {
	t.Helper()
	_, lerr := config.Parse(name, data)
	v := verdict{loaderErr: lerr}
	inst, ok := instance(data)
	if !ok {
		return v
	}
	v.parses = true
	v.schemaErr = s.Validate(inst)
	return v
}

// validConfigs are the configuration files people copy from: each must
// load, pass the schema, and name the schema for editors when it is YAML.
func validConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var names []string
	for _, g := range []string{"../../examples/*.yaml", "../../cmd/gatehouse/testdata/good.yaml", "../../cmd/gatehouse/testdata/init/*.yaml"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, m...)
	}
	// The testdata files whose golden is "ok".
	goldens, _ := filepath.Glob("../testdata/*.golden")
	for _, g := range goldens {
		want, _ := os.ReadFile(g)
		if strings.TrimSpace(string(want)) != "ok" {
			continue
		}
		base := strings.TrimSuffix(g, ".golden")
		for _, ext := range []string{".yaml", ".json"} {
			if _, err := os.Stat(base + ext); err == nil {
				names = append(names, base+ext)
			}
		}
	}
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = data
	}
	// The config inside the Kubernetes ConfigMap.
	cm, err := os.ReadFile("../../deploy/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(cm, &m); err != nil {
		t.Fatal(err)
	}
	out["deploy/kubernetes/configmap.yaml data[gatehouse.yaml]"] = []byte(m.Data["gatehouse.yaml"])
	return out
}

// TestExamplesAgree: every example config loads and passes the schema.
func TestExamplesAgree(t *testing.T) {
	s := compile(t)
	files := validConfigs(t)
	if len(files) < 5 {
		t.Fatalf("found only %d example configs", len(files))
	}
	for name, data := range files {
		v := judge(t, s, name, data)
		if v.loaderErr != nil {
			t.Errorf("%s: the loader refuses it:\n%v", name, v.loaderErr)
		}
		if !v.parses || v.schemaErr != nil {
			t.Errorf("%s: the schema refuses it:\n%v", name, v.schemaErr)
		}
		if strings.HasSuffix(name, ".yaml") && !bytes.HasPrefix(data, []byte("# yaml-language-server: $schema=")) {
			t.Errorf("%s: the first line is not a # yaml-language-server: $schema= line", name)
		} else if strings.HasSuffix(name, ".yaml") {
			first, _, _ := strings.Cut(string(data), "\n")
			ref := strings.TrimPrefix(first, "# yaml-language-server: $schema=")
			if ref != jsonschema.ID && abs(t, filepath.Join(filepath.Dir(name), ref)) != abs(t, schemaFile) {
				t.Errorf("%s: the $schema line points at %s, not at config/gatehouse.schema.json", name, ref)
			}
		}
	}
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestInvalidConfigs runs the loader and the schema over every config in
// config/testdata that the loader refuses. The schema must never refuse a
// config that the loader accepts; where it accepts one that the loader
// refuses (what it cannot say), testdata/loader_only.golden lists the file
// and the loader's reasons, so that a change in either shows up here.
func TestInvalidConfigs(t *testing.T) {
	s := compile(t)
	files, err := filepath.Glob("../testdata/*.*")
	if err != nil {
		t.Fatal(err)
	}
	var report []string
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".golden") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := judge(t, s, f, data)
		if v.loaderErr == nil {
			if v.schemaErr != nil {
				t.Errorf("%s: the loader accepts it, the schema refuses it:\n%v", f, v.schemaErr)
			}
			continue
		}
		checked++
		if !v.parses {
			continue // not YAML: editors say so themselves
		}
		if v.schemaErr == nil {
			var cerr *config.Error
			reasons := v.loaderErr.Error()
			if errors.As(v.loaderErr, &cerr) {
				reasons = cerr.Error()
			}
			report = append(report, fmt.Sprintf("%s:\n  %s", filepath.Base(f), strings.ReplaceAll(strings.TrimSpace(reasons), "\n", "\n  ")))
		}
	}
	if checked < 10 {
		t.Fatalf("only %d invalid configs checked", checked)
	}
	slices.Sort(report)
	got := "# Configs in config/testdata that the loader refuses and the schema accepts:\n" +
		"# what JSON Schema cannot say (cross-references, duplicate keys, CEL, ...).\n" +
		strings.Join(report, "\n") + "\n"
	golden := "testdata/loader_only.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("what only the loader catches changed (go test ./config/jsonschema -update):\n%s", got)
	}
}

// TestSchemaCatches spot-checks constraints that come from protovalidate
// rules, and leniencies that match the loader.
func TestSchemaCatches(t *testing.T) {
	s := compile(t)
	base := "listeners: [{name: edge, address: \"127.0.0.1:8080\"}]\n"
	for _, tt := range []struct {
		name, yaml string
		ok         bool
	}{
		{"minimal", base, true},
		{"no listeners", "admin: {address: \"127.0.0.1:1\"}\n", false},
		{"unknown key", base + "frobnicate: 1\n", false},
		{"camelCase alias", base + "shutdownGrace: 5s\n", true},
		{"null leaves unset", base + "admin:\nlogging:\n", true},
		{"bad name pattern", "listeners: [{name: Edge, address: \"127.0.0.1:8080\"}]\n", false},
		{"protocol in", "listeners: [{name: edge, address: \"127.0.0.1:8080\", protocol: http3}]\n", false},
		{"empty protocol", "listeners: [{name: edge, address: \"127.0.0.1:8080\", protocol: \"\"}]\n", true},
		{"limit range", "listeners: [{name: edge, address: \"127.0.0.1:8080\", limits: {max_concurrent_streams: 0}}]\n", false},
		{"integer as string", "listeners: [{name: edge, address: \"127.0.0.1:8080\", limits: {max_concurrent_streams: \"50\"}}]\n", true},
		{"bad duration", base + "shutdown_grace: 5 seconds\n", false},
		{"go duration", base + "shutdown_grace: 1m30s\n", true},
		{"protojson duration", base + "shutdown_grace: 0.25s\n", true},
		{"oneof none", base + "routes: [{name: r, backend: b, match: {metadata: [{name: x}]}}]\n", false},
		{"oneof two", base + "routes: [{name: r, backend: b, match: {metadata: [{name: x, exact: a, prefix: b}]}}]\n", false},
		{"oneof one and a null", base + "routes: [{name: r, backend: b, match: {metadata: [{name: x, exact: null, prefix: b}]}}]\n", true},
		{"present false", base + "routes: [{name: r, backend: b, match: {metadata: [{name: x, present: false}]}}]\n", false},
		{"reserved metadata", base + "routes: [{name: r, backend: b, match: {metadata: [{name: grpc-timeout, present: true}]}}]\n", false},
		{"retry on (YAML 1.1 key)", base + "routes: [{name: r, backend: b, retry: {attempts: 2, on: [UNAVAILABLE]}}]\n", true},
		{"retry on bad code", base + "routes: [{name: r, backend: b, retry: {attempts: 2, on: [NOT_FOUND]}}]\n", false},
		{"duplicate endpoints", base + "backends: [{name: b, endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"]}]\n", false},
		{"required nested", base + "quota: {policies: [{name: p, quota: {requests: 5}}]}\n", false},
		{"tracing needs otlp", base + "telemetry: {tracing: {sampling_ratio: 0.5}}\n", false},
		{"ratio range", base + "telemetry: {tracing: {otlp: {endpoint: \"127.0.0.1:4317\"}, sampling_ratio: 2}}\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inst, ok := instance([]byte(tt.yaml))
			if !ok {
				t.Fatal("not YAML")
			}
			err := s.Validate(inst)
			if (err == nil) != tt.ok {
				t.Errorf("schema: %v, want ok=%v", err, tt.ok)
			}
			// The loader must agree wherever the schema accepts.
			if _, lerr := config.Parse("t.yaml", []byte(tt.yaml)); lerr == nil && err != nil {
				t.Errorf("the loader accepts what the schema refuses: %v", err)
			}
		})
	}
}
