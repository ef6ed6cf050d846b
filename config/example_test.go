package config_test

import (
	"errors"
	"fmt"

	"github.com/gatehouse-dev/gatehouse/config"
)

// Parse reports every problem in a file at once, each with its field path.
func ExampleParse() {
	_, err := config.Parse("gatehouse.yaml", []byte(`
listeners:
  - name: edge
    address: "127.0.0.1:8080"
    limits: { max_concurrent_streams: lots }
backends:
  - name: orders
    endpoints: ["127.0.0.1:9001"]
routes:
  - name: orders
    match:
      metadata: [{ name: x-track, regx: "canary" }]
    backend: order
`))
	fmt.Println(err)

	var cerr *config.Error
	if errors.As(err, &cerr) {
		fmt.Println(len(cerr.Errors), "problems; the first is at line", cerr.Errors[0].Line)
	}
	// Output:
	// gatehouse.yaml: listeners[0].limits.max_concurrent_streams: want a number, got "lots"
	// gatehouse.yaml: routes[0].match.metadata[0].regx: unknown field "regx"
	// gatehouse.yaml: routes[0].match.metadata[0].kind: one of exact, prefix, suffix, regex, present or absent is required
	// gatehouse.yaml: routes[0].backend: unknown backend "order"
	// 4 problems; the first is at line 5
}

// ListenerLimits fills in the defaults of the limits a listener leaves out.
func ExampleListenerLimits() {
	cfg, err := config.Parse("gatehouse.yaml", []byte(`
listeners:
  - name: edge
    address: "127.0.0.1:8080"
    limits: { max_concurrent_streams: 500, idle_timeout: 1m }
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	lim := config.ListenerLimits(cfg.GetListeners()[0])
	fmt.Println(lim.MaxConcurrentStreams, lim.IdleTimeout, lim.MaxMessageBytes, lim.KeepalivePing)
	fmt.Println(config.ShutdownGrace(cfg))
	// Output:
	// 500 1m0s 4194304 2h0m0s
	// 30s
}
