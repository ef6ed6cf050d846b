// Package config loads and checks gatehouse.yaml.
//
// The configuration is the proto message
// [github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1.Config]; its .proto file,
// proto/gatehouse/config/v1/config.proto, is the configuration reference.
// [Load] and [Parse] read YAML (or JSON, which YAML contains), convert it to
// JSON and decode it with protojson, so keys are the proto field names in
// snake_case (lowerCamelCase is accepted too) and durations are strings.
// Durations may be written the Go way ("250ms", "5m", "1h30m") as well as the
// protojson way ("0.25s").
//
// Loading checks everything before it returns: the shape of the document
// (unknown keys, wrong types), every protovalidate rule in the .proto file,
// and the cross-references that a single field cannot express (a route names
// an existing backend, names and addresses are unique, regular expressions
// compile, addresses are host:port). All problems are reported at once, in
// file order, as an [*Error] whose lines read
//
//	gatehouse.yaml: routes[2].backend: unknown backend "orders"
//
// The configuration message leaves optional values unset; the functions in
// defaults.go ([ListenerLimits], [ShutdownGrace], [ListenerProtocol],
// [LogLevel]) give the effective value of each, with every default held in
// one place.
package config
