package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/config/jsonschema"
)

// initBackend is one --backend flag: a name and its endpoints.
type initBackend struct {
	name      string
	endpoints []string
}

// backendFlags collects repeated --backend name=host:port[,host:port] flags.
type backendFlags []initBackend

var backendName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)

func (b *backendFlags) String() string {
	var parts []string
	for _, x := range *b {
		parts = append(parts, x.name+"="+strings.Join(x.endpoints, ","))
	}
	return strings.Join(parts, " ")
}

func (b *backendFlags) Set(v string) error {
	name, eps, ok := strings.Cut(v, "=")
	if !ok || eps == "" {
		return errors.New("want name=host:port")
	}
	if !backendName.MatchString(name) || len(name) > 63 {
		return fmt.Errorf("backend name %q: want lower-case letters, digits, \"-\" and \"_\", starting and ending with a letter or digit", name)
	}
	for _, x := range *b {
		if x.name == name {
			return fmt.Errorf("backend %q given twice", name)
		}
	}
	nb := initBackend{name: name}
	for ep := range strings.SplitSeq(eps, ",") {
		if _, _, err := net.SplitHostPort(ep); err != nil {
			return fmt.Errorf("endpoint %q: want host:port", ep)
		}
		nb.endpoints = append(nb.endpoints, ep)
	}
	*b = append(*b, nb)
	return nil
}

// runInit is `gatehouse init`: a starter config from the backends' server
// reflection.
func runInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { commandHelp(stderr, "init") }
	var backends backendFlags
	fs.Var(&backends, "backend", "")
	out := fs.String("o", "", "")
	force := fs.Bool("force", false, "")
	listen := fs.String("listen", "127.0.0.1:8080", "")
	admin := fs.String("admin", "127.0.0.1:9901", "")
	timeout := fs.Duration("timeout", 5*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gatehouse init: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if len(backends) == 0 {
		fmt.Fprintln(stderr, "gatehouse init: give at least one --backend name=host:port")
		return 2
	}
	if *out != "" && !*force {
		if _, err := os.Stat(*out); err == nil {
			fmt.Fprintf(stderr, "gatehouse init: %s exists; use --force to overwrite it\n", *out)
			return 1
		}
	}

	var found []backendSchema
	for _, b := range backends {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		s := reflectBackend(ctx, b)
		cancel()
		if s.err != nil {
			fmt.Fprintf(stderr, "gatehouse init: backend %s (%s): %s: wrote the backend with a placeholder route; put its services in by hand\n",
				b.name, b.endpoints[0], s.reason())
		} else if len(s.services) == 0 {
			fmt.Fprintf(stderr, "gatehouse init: backend %s (%s): server reflection lists no services of its own: wrote a placeholder route\n", b.name, b.endpoints[0])
		}
		found = append(found, s)
	}
	text := starterConfig(initOptions{listen: *listen, admin: *admin}, found)
	if _, err := config.Parse("gatehouse.yaml", []byte(text)); err != nil {
		// A bug here, not the user's: say so, and show what was made.
		fmt.Fprintf(stderr, "gatehouse init: the config written does not load (a bug in init):\n%v\n", err)
		return 1
	}
	if *out == "" {
		fmt.Fprint(stdout, text)
		return 0
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintf(stderr, "gatehouse init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "gatehouse init: wrote %s; check it with: gatehouse validate -c %s\n", *out, *out)
	return 0
}

// backendSchema is what server reflection told about one backend.
type backendSchema struct {
	initBackend
	services []serviceInfo // sorted by name, reflection and health left out
	health   bool          // it serves grpc.health.v1.Health
	err      error         // reflection failed: no services known
}

func (b backendSchema) reason() string {
	if s, ok := status.FromError(b.err); ok {
		switch s.Code() {
		case codes.Unimplemented:
			return "no server reflection (it answers UNIMPLEMENTED)"
		case codes.Unavailable:
			// "connection error: desc = \"transport: ...: connection refused\""
			msg := strings.Trim(s.Message(), `"`)
			return "cannot reach it (" + strings.Trim(msg[strings.LastIndex(msg, ": ")+1:], ` "`) + ")"
		case codes.DeadlineExceeded:
			return "no answer from server reflection in time"
		}
		return "server reflection failed: " + s.Code().String() + ": " + s.Message()
	}
	return "server reflection failed: " + b.err.Error()
}

type serviceInfo struct {
	name    string
	methods []methodInfo
}

// rest reports whether any method carries google.api.http.
func (s serviceInfo) rest() bool {
	for _, m := range s.methods {
		if len(m.http) > 0 {
			return true
		}
	}
	return false
}

// streaming reports whether any method streams.
func (s serviceInfo) streaming() bool {
	for _, m := range s.methods {
		if m.clientStreaming || m.serverStreaming {
			return true
		}
	}
	return false
}

type methodInfo struct {
	name                             string
	clientStreaming, serverStreaming bool
	http                             []string // "POST /v1/books", one per binding
}

// reflectionMethods are the server reflection services, newest first. The
// v1alpha messages are the v1 messages on the wire, so one client speaks both.
var reflectionMethods = []string{
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// reflectBackend asks the backend's first endpoint which services it serves
// and what their methods are.
func reflectBackend(ctx context.Context, b initBackend) backendSchema {
	out := backendSchema{initBackend: b}
	cc, err := grpc.NewClient(b.endpoints[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		out.err = err
		return out
	}
	defer cc.Close()
	for _, method := range reflectionMethods {
		out.services, out.health, err = reflectOnce(ctx, cc, method)
		if status.Code(err) != codes.Unimplemented {
			break
		}
	}
	out.err = err
	return out
}

func reflectOnce(ctx context.Context, cc *grpc.ClientConn, method string) ([]serviceInfo, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return nil, false, err
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
		if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		} // io.EOF: the server ended the stream; RecvMsg says why

		resp := new(reflectionpb.ServerReflectionResponse)
		if err := stream.RecvMsg(resp); err != nil {
			return nil, err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
		}
		return resp, nil
	}
	resp, err := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	if err != nil {
		return nil, false, err
	}
	var services []serviceInfo
	health := false
	for _, s := range resp.GetListServicesResponse().GetService() {
		name := s.GetName()
		switch {
		case name == "grpc.health.v1.Health":
			health = true
			continue
		case strings.HasPrefix(name, "grpc.reflection."):
			continue
		}
		fr, err := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name}})
		if err != nil {
			// The service is listed, its schema is not: route it anyway.
			services = append(services, serviceInfo{name: name})
			continue
		}
		services = append(services, describeService(name, fr.GetFileDescriptorResponse().GetFileDescriptorProto()))
	}
	_ = stream.CloseSend()
	slices.SortFunc(services, func(a, b serviceInfo) int { return strings.Compare(a.name, b.name) })
	return services, health, nil
}

// describeService finds the service in the serialized files and lists its
// methods and their google.api.http bindings.
func describeService(name string, files [][]byte) serviceInfo {
	out := serviceInfo{name: name}
	for _, raw := range files {
		fd := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(raw, fd); err != nil {
			continue
		}
		for _, sd := range fd.GetService() {
			full := sd.GetName()
			if fd.GetPackage() != "" {
				full = fd.GetPackage() + "." + full
			}
			if full != name {
				continue
			}
			for _, md := range sd.GetMethod() {
				m := methodInfo{name: md.GetName(), clientStreaming: md.GetClientStreaming(), serverStreaming: md.GetServerStreaming()}
				if rule, ok := proto.GetExtension(md.GetOptions(), annotations.E_Http).(*annotations.HttpRule); ok && rule != nil {
					m.http = httpBindings(rule)
				}
				out.methods = append(out.methods, m)
			}
			return out
		}
	}
	return out
}

// httpBindings words an HttpRule and its additional bindings.
func httpBindings(r *annotations.HttpRule) []string {
	var out []string
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		out = append(out, "GET "+p.Get)
	case *annotations.HttpRule_Put:
		out = append(out, "PUT "+p.Put)
	case *annotations.HttpRule_Post:
		out = append(out, "POST "+p.Post)
	case *annotations.HttpRule_Delete:
		out = append(out, "DELETE "+p.Delete)
	case *annotations.HttpRule_Patch:
		out = append(out, "PATCH "+p.Patch)
	case *annotations.HttpRule_Custom:
		out = append(out, p.Custom.GetKind()+" "+p.Custom.GetPath())
	}
	for _, a := range r.GetAdditionalBindings() {
		out = append(out, httpBindings(a)...)
	}
	return out
}

type initOptions struct {
	listen, admin string
}

// starterConfig writes the commented config.
func starterConfig(o initOptions, backends []backendSchema) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# yaml-language-server: $schema=%s\n", jsonschema.ID)
	w("#\n")
	w("# A starter Gatehouse config, written by `gatehouse init` from the backends'\n")
	w("# server reflection. Check it with `gatehouse validate -c FILE` after each\n")
	w("# edit and run it with `gatehouse serve -c FILE`. The schema line above makes\n")
	w("# editors complete and check every key; config.proto documents them all.\n")
	w("\n")
	w("listeners:\n")
	w("  - name: edge\n")
	w("    # gRPC (h2c) and REST/JSON on one port. Loopback only: before binding\n")
	w("    # other interfaces, add an authentication section and an auth block to\n")
	w("    # each route (or require_auth: true here), and TLS (tls: {cert_file, key_file}).\n")
	w("    address: %q\n", o.listen)
	w("\n")
	w("admin:\n")
	w("  # Health (/healthz, /readyz), metrics and the admin API. Keep it on\n")
	w("  # loopback or an internal network.\n")
	w("  address: %q\n", o.admin)
	w("\n")
	w("backends:\n")
	for _, be := range backends {
		switch {
		case be.err != nil:
			w("  # %s: %s.\n", be.endpoints[0], be.reason())
		default:
			w("  # %s: server reflection lists %s.\n", be.endpoints[0], plural(len(be.services), "service"))
		}
		w("  - name: %s\n", be.name)
		w("    endpoints: [%s]\n", quoteList(be.endpoints))
		if be.health {
			w("    health_check: {}               # it serves grpc.health.v1: unhealthy endpoints get no traffic\n")
		}
		if slices.ContainsFunc(be.services, serviceInfo.rest) {
			w("    schema: { reflection: {} }     # REST/JSON from its google.api.http annotations\n")
		}
	}
	w("\n")
	w("# Routes are tried in order; the first whose match holds takes the call. A\n")
	w("# call that no route takes gets UNIMPLEMENTED (gRPC) or 404 (REST).\n")
	w("routes:\n")
	names := map[string]bool{}
	for _, be := range backends {
		if len(be.services) == 0 {
			name := uniqueName(names, be.name)
			w("  # PLACEHOLDER: %s did not say what it serves. Put the full name of a\n", be.name)
			w("  # service it serves below (one route per service, or a package glob \"pkg.*\").\n")
			w("  - name: %s\n", name)
			w("    match: { service: %q }\n", "todo."+protoIdent(be.name)+".Service")
			w("    backend: %s\n", be.name)
			w("    timeout: { max: 30s }\n")
			continue
		}
		for _, s := range be.services {
			name := uniqueName(names, routeName(s.name))
			w("  # %s on %s", s.name, be.name)
			if len(s.methods) > 0 {
				w(": %s", plural(len(s.methods), "method"))
			}
			w(".\n")
			width := 0
			for _, m := range s.methods {
				width = max(width, len(m.name))
			}
			for _, m := range s.methods {
				kind := ""
				switch {
				case m.clientStreaming && m.serverStreaming:
					kind = " (bidi stream)"
				case m.clientStreaming:
					kind = " (client stream)"
				case m.serverStreaming:
					kind = " (server stream)"
				}
				rest := strings.Join(m.http, ", ")
				if rest == "" {
					rest = "gRPC only"
				}
				w("  #   %-*s  %s%s\n", width, m.name, rest, kind)
			}
			w("  - name: %s\n", name)
			w("    match: { service: %q }\n", s.name)
			w("    backend: %s\n", be.name)
			if s.streaming() {
				w("    # Streams are not cut at a fixed deadline; one quiet for 5m ends.\n")
				w("    timeout: { idle: 5m }\n")
			} else {
				w("    timeout: { max: 30s }          # the longest deadline a call may have\n")
			}
			w("    # auth: { require: [NAME] }    # once an authentication section names NAME\n")
		}
	}
	w("\n")
	w("# How long SIGTERM waits for calls in flight before stopping.\n")
	w("shutdown_grace: 30s\n")
	return b.String()
}

// routeName makes a route name from a service name:
// "examples.greeter.v1.GreeterService" becomes "greeter-service".
func routeName(service string) string {
	short := service[strings.LastIndex(service, ".")+1:]
	var b strings.Builder
	for i, r := range short {
		switch {
		case r >= 'A' && r <= 'Z':
			if i > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r - 'A' + 'a')
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-_")
	if len(n) > 55 {
		n = strings.Trim(n[:55], "-_")
	}
	if n == "" {
		n = "service"
	}
	return n
}

// protoIdent makes a backend name a proto identifier: "orders-v2" becomes
// "orders_v2", "9svc" becomes "_9svc".
func protoIdent(name string) string {
	id := strings.ReplaceAll(name, "-", "_")
	if id[0] >= '0' && id[0] <= '9' {
		id = "_" + id
	}
	return id
}

// uniqueName returns name, or name-2, name-3... if it is taken.
func uniqueName(taken map[string]bool, name string) string {
	n := name
	for i := 2; taken[n]; i++ {
		n = fmt.Sprintf("%s-%d", name, i)
	}
	taken[n] = true
	return n
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
