// Command genschema writes config/gatehouse.schema.json, the JSON Schema of
// gatehouse.yaml, from the Config message and the comments in
// proto/gatehouse/config/v1/config.proto. Run it from the module root after
// changing config.proto (CI fails when the committed schema differs):
//
//	go run ./cmd/genschema
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gatehouse-dev/gatehouse/config/jsonschema"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("genschema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := fs.String("proto", "proto/gatehouse/config/v1/config.proto", "config.proto, for field comments")
	out := fs.String("o", "config/gatehouse.schema.json", `where the schema goes ("-" for standard output)`)
	verbose := fs.Bool("v", false, "list the rules the schema cannot express")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	data, err := os.ReadFile(*src)
	if err != nil {
		fmt.Fprintln(stderr, "genschema:", err)
		return 1
	}
	res, err := jsonschema.Generate((&configv1.Config{}).ProtoReflect().Descriptor(), configv1.File_gatehouse_config_v1_config_proto.Path(), data, jsonschema.Options{
		ID:    jsonschema.ID,
		Title: jsonschema.Title,
	})
	if err != nil {
		fmt.Fprintln(stderr, "genschema:", err)
		return 1
	}
	if *verbose {
		for _, u := range res.Unexpressed {
			fmt.Fprintln(stderr, "not in the schema (checked when loaded):", u)
		}
	}
	if *out == "-" {
		_, err = os.Stdout.Write(res.JSON)
	} else {
		err = os.WriteFile(*out, res.JSON, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "genschema:", err)
		return 1
	}
	return 0
}
