package config

import _ "embed"

// schema is the JSON Schema of gatehouse.yaml, generated from config.proto
// (run go generate after changing it); editors read it through a
// "# yaml-language-server: $schema=" line at the top of a config file.
//
//go:generate go run ../cmd/genschema -proto ../proto/gatehouse/config/v1/config.proto -o gatehouse.schema.json
//go:embed gatehouse.schema.json
var schema []byte

// Schema returns the JSON Schema (draft-07) of the configuration file. It
// follows what [Parse] accepts and never refuses a file that loads; the
// checks it cannot express (cross-references, duration ranges) are left to
// Parse.
func Schema() []byte {
	return append([]byte(nil), schema...)
}
