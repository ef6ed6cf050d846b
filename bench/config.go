package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"text/template"
)

// gatehouseConfig is what gatehouse.yaml is rendered from.
type gatehouseConfig struct {
	GRPC, Shared, SharedHTTP string // listener addresses
	Test, Greeter            string // backend endpoints
}

// gatehouseTmpl is the gateway's config: one native gRPC listener and one
// shared listener, every limit and the interceptor chain as shipped (access
// log on), and one route per backend service.
var gatehouseTmpl = template.Must(template.New("gatehouse.yaml").Parse(`# Rendered by bench/: the Gatehouse under test.
listeners:
  - name: grpc
    address: "{{.GRPC}}"
    protocol: grpc
  - name: shared
    address: "{{.Shared}}"
  - name: shared_http
    address: "{{.SharedHTTP}}"
    grpc_connections: http
backends:
  - name: testsvc
    endpoints: ["{{.Test}}"]
  - name: greeter
    endpoints: ["{{.Greeter}}"]
routes:
  - name: testsvc
    match: { service: "grpc.testing.TestService" }
    backend: testsvc
  - name: greeter
    match: { service: "examples.greeter.v1.GreeterService" }
    backend: greeter
shutdown_grace: 1s
`))

func renderGatehouse(c gatehouseConfig) ([]byte, error) {
	var b bytes.Buffer
	if err := gatehouseTmpl.Execute(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// nginxConfig is what nginx.conf is rendered from.
type nginxConfig struct {
	Dir      string // prefix: error log, pid file, temp paths
	Listen   string // host:port
	Upstream string // host:port of the TestService backend
	// HTTP2On uses the "http2 on;" directive (nginx >= 1.25.1); older
	// versions take the "http2" parameter of "listen".
	HTTP2On bool
}

// nginxTmpl is the reference proxy: one worker, no access log, gRPC to a
// keepalive upstream. keepalive_requests is raised on both sides so that
// nginx does not close client or upstream connections every 1000 calls
// (its default), which would measure reconnects, not proxying.
var nginxTmpl = template.Must(template.New("nginx.conf").Parse(`# Rendered by bench/: the nginx reference proxy.
worker_processes 1;
error_log {{.Dir}}/error.log warn;
pid {{.Dir}}/nginx.pid;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/tmp/client_body;
    proxy_temp_path {{.Dir}}/tmp/proxy;
    fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
    scgi_temp_path {{.Dir}}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream backend {
        server {{.Upstream}};
        keepalive 32;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
{{- if .HTTP2On}}
        listen {{.Listen}};
        http2 on;
{{- else}}
        listen {{.Listen}} http2;
{{- end}}
        location / {
            grpc_pass grpc://backend;
        }
    }
}
`))

func renderNginx(c nginxConfig) ([]byte, error) {
	var b bytes.Buffer
	if err := nginxTmpl.Execute(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

var nginxVersionRE = regexp.MustCompile(`nginx/(\d+)\.(\d+)\.(\d+)`)

// nginxHasHTTP2On reports whether the output of `nginx -v` names a version
// with the "http2 on;" directive (1.25.1 and later).
func nginxHasHTTP2On(versionOutput string) (bool, error) {
	m := nginxVersionRE.FindStringSubmatch(versionOutput)
	if m == nil {
		return false, fmt.Errorf("cannot read the nginx version from %q", versionOutput)
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	switch {
	case v[0] != 1:
		return v[0] > 1, nil
	case v[1] != 25:
		return v[1] > 25, nil
	default:
		return v[2] >= 1, nil
	}
}
