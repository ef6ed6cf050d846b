package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/gatehouse-dev/gatehouse/config"
)

// command documents one subcommand for --help and shell completion. The
// flags each command parses are defined where it runs; the help tests
// check that every flag a command accepts is documented here.
type command struct {
	name     string
	args     string // after the flags in the usage line
	summary  string // one line, for the command list and zsh
	about    string // paragraphs
	flags    []flagDoc
	examples []string
	words    []string // fixed words the first argument may be (completion)
}

type flagDoc struct {
	name, arg, doc string
	file           bool // its value is a file name (completion)
}

var commands = []command{
	{
		name:    "serve",
		summary: "run the gateway",
		about: `Runs the gateway with the config in FILE. On start it prints a summary
(listeners, routes, backends, which use TLS, which routes need no
credentials) and warns about risky settings, as JSON log lines on standard
error. SIGTERM or SIGINT drain calls in flight for up to shutdown_grace,
then exit; SIGHUP reloads the file.`,
		flags: []flagDoc{{"c", "FILE", "config file, YAML or JSON (default gatehouse.yaml)", true}},
		examples: []string{
			"gatehouse serve -c gatehouse.yaml",
			"gatehouse serve -c /etc/gatehouse/gatehouse.yaml 2>gatehouse.log >access.log",
		},
	},
	{
		name:    "validate",
		summary: "check a config and list every error",
		about: `Loads FILE as serve would and lists every error at once, each as
FILE: field.path: reason. The exit status is 1 if there is any.`,
		flags: []flagDoc{{"c", "FILE", "config file, YAML or JSON (default gatehouse.yaml)", true}},
		examples: []string{
			"gatehouse validate -c gatehouse.yaml",
			"gatehouse validate -c gatehouse.yaml && kubectl apply -f deploy/kubernetes/",
		},
	},
	{
		name:    "init",
		summary: "write a starter config from backends' server reflection",
		about: `Asks each backend's gRPC server reflection which services it serves and
writes a commented starter config: a listener and an admin listener on
loopback, each backend (with health checks when it serves grpc.health.v1,
and REST/JSON transcoding when its protos carry google.api.http), one route
per service with a timeout, and a shutdown grace period. A backend without
reflection is written with a placeholder route to fill in. The result loads
as it is; check it with gatehouse validate after editing.`,
		flags: []flagDoc{
			{"backend", "NAME=HOST:PORT", "a backend and its endpoint(s), comma-separated; repeat for more", false},
			{"o", "FILE", "write the config to FILE instead of standard output", true},
			{"force", "", "overwrite FILE if it exists", false},
			{"listen", "ADDR", "the edge listener's address (default 127.0.0.1:8080)", false},
			{"admin", "ADDR", "the admin listener's address (default 127.0.0.1:9901)", false},
			{"timeout", "DURATION", "how long to wait for each backend's reflection (default 5s)", false},
		},
		examples: []string{
			"gatehouse init --backend orders=127.0.0.1:9001",
			"gatehouse init --backend orders=10.0.0.5:9001,10.0.0.6:9001 --backend users=127.0.0.1:9002 -o gatehouse.yaml",
		},
	},
	{
		name:    "demo",
		summary: "run the gateway in front of example backends",
		about: `Starts three greeter instances and a library service, puts the gateway
in front of them and prints ready-to-paste grpcurl and curl commands.
Ctrl-C stops it.`,
		flags: []flagDoc{
			{"listen", "ADDR", "edge listener address, gRPC and REST (default 127.0.0.1:8080)", false},
			{"admin", "ADDR", "admin listener address (default 127.0.0.1:9901)", false},
		},
		examples: []string{
			"gatehouse demo",
			"gatehouse demo -listen 127.0.0.1:18080 -admin 127.0.0.1:19901",
		},
	},
	{
		name:    "audit",
		args:    "verify FILE",
		summary: "check an audit file's hash chain",
		about: `Checks the hash chain of an audit file and names the first altered,
removed or reordered record. The exit status is 1 if the chain is broken.`,
		examples: []string{"gatehouse audit verify /var/log/gatehouse/audit.jsonl"},
		words:    []string{"verify"},
	},
	{
		name:    "completion",
		args:    "bash|zsh",
		summary: "print a shell completion script",
		about:   `Prints a completion script for bash or zsh.`,
		examples: []string{
			"gatehouse completion bash > /etc/bash_completion.d/gatehouse",
			"source <(gatehouse completion bash)      # in ~/.bashrc",
			"source <(gatehouse completion zsh)       # in ~/.zshrc",
		},
		words: []string{"bash", "zsh"},
	},
	{
		name:    "schema",
		summary: "print the config file's JSON Schema",
		about: `Prints the JSON Schema of gatehouse.yaml (draft-07), the one this binary
loads by. Editors that read a "# yaml-language-server: $schema=PATH" line at
the top of a YAML file (VS Code's YAML extension, Neovim, JetBrains) then
complete keys, show each field's documentation and flag mistakes as you
type. The schema never refuses a file that gatehouse validate accepts;
validate also checks what a schema cannot (cross-references, ranges of
durations).`,
		examples: []string{
			"gatehouse schema > gatehouse.schema.json   # then: # yaml-language-server: $schema=gatehouse.schema.json",
		},
	},
	{
		name:    "version",
		summary: "print the version, VCS revision and Go version",
		about: `Prints the module version, the VCS revision the binary was built from
(with "(modified)" if the tree had uncommitted changes) and the Go version
that built it.`,
		examples: []string{"gatehouse version"},
	},
	{
		name:     "help",
		args:     "[COMMAND]",
		summary:  "show help for a command",
		about:    `Shows the list of commands, or a command's help (as COMMAND --help does).`,
		examples: []string{"gatehouse help init"},
	},
}

func findCommand(name string) (command, bool) {
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		return command{}, false
	}
	return commands[i], true
}

// wantsHelp reports whether args ask for help: -h, -help or --help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "-h" || a == "-help" || a == "--help" {
			return true
		}
	}
	return false
}

// commandHelp writes a command's help: usage, what it does, flags and
// examples. It reports false for an unknown command.
func commandHelp(w io.Writer, name string) bool {
	c, ok := findCommand(name)
	if !ok {
		return false
	}
	usage := "usage: gatehouse " + c.name
	if len(c.flags) > 0 {
		usage += " [flags]"
	}
	if c.args != "" {
		usage += " " + c.args
	}
	fmt.Fprintf(w, "%s\n\n%s\n", usage, c.about)
	if len(c.flags) > 0 {
		fmt.Fprintf(w, "\nflags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range c.flags {
			name := "-" + f.name
			if f.arg != "" {
				name += " " + f.arg
			}
			fmt.Fprintf(tw, "  %s\t%s\n", name, f.doc)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "\nexamples:\n")
	for _, e := range c.examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	return true
}

// helpCommand is `gatehouse help [COMMAND]`.
func helpCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if !commandHelp(stdout, args[0]) {
		fmt.Fprintf(stderr, "gatehouse: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return 0
}

// printVersion is `gatehouse version`: the module version, the VCS
// revision and the Go version.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "gatehouse %s\n", buildVersion())
	module, revision, modified, when := "github.com/gatehouse-dev/gatehouse", "unknown", false, ""
	moduleVersion := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path != "" {
			module = bi.Main.Path
		}
		if bi.Main.Version != "" {
			moduleVersion = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				when = s.Value
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "  module:\t%s %s\n", module, moduleVersion)
	rev := revision
	if modified {
		rev += " (modified)"
	}
	if when != "" {
		rev += " " + when
	}
	fmt.Fprintf(tw, "  revision:\t%s\n", rev)
	fmt.Fprintf(tw, "  go:\t%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	_ = tw.Flush()
}

// printSchema is `gatehouse schema`.
func printSchema(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: gatehouse schema")
		return 2
	}
	_, _ = stdout.Write(config.Schema())
	return 0
}

// completion is `gatehouse completion bash|zsh`.
func completion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: gatehouse completion bash|zsh")
		return 2
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(stdout, bashCompletion())
	case "zsh":
		fmt.Fprint(stdout, zshCompletion())
	default:
		fmt.Fprintf(stderr, "gatehouse completion: unknown shell %q: want bash or zsh\n", args[0])
		return 2
	}
	return 0
}

func commandNames() []string {
	var out []string
	for _, c := range commands {
		out = append(out, c.name)
	}
	return out
}

func bashCompletion() string {
	var b strings.Builder
	b.WriteString(`# bash completion for gatehouse. Load it with:
#   source <(gatehouse completion bash)
_gatehouse() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "` + strings.Join(commandNames(), " ") + ` --help --version" -- "$cur"))
    return
  fi
  case "$prev" in
`)
	var fileFlags, valueFlags []string
	for _, c := range commands {
		for _, f := range c.flags {
			switch {
			case f.file:
				fileFlags = appendNew(fileFlags, "-"+f.name, "--"+f.name)
			case f.arg != "":
				valueFlags = appendNew(valueFlags, "-"+f.name, "--"+f.name)
			}
		}
	}
	fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(fileFlags, "|"))
	fmt.Fprintf(&b, "    %s) return ;;\n", strings.Join(valueFlags, "|"))
	b.WriteString("  esac\n  case \"${COMP_WORDS[1]}\" in\n")
	for _, c := range commands {
		var words []string
		for _, f := range c.flags {
			words = append(words, "-"+f.name)
		}
		words = append(words, "--help")
		switch {
		case c.name == "help":
			fmt.Fprintf(&b, "    help) COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")) ;;\n", strings.Join(commandNames(), " "))
		case len(c.words) > 0:
			fmt.Fprintf(&b, "    %s)\n      if [[ $COMP_CWORD -eq 2 ]]; then COMPREPLY=($(compgen -W \"%s --help\" -- \"$cur\")); else COMPREPLY=($(compgen -f -- \"$cur\")); fi ;;\n",
				c.name, strings.Join(c.words, " "))
		default:
			fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")) ;;\n", c.name, strings.Join(words, " "))
		}
	}
	b.WriteString("  esac\n}\ncomplete -o default -F _gatehouse gatehouse\n")
	return b.String()
}

func zshCompletion() string {
	var b strings.Builder
	b.WriteString(`#compdef gatehouse
# zsh completion for gatehouse. Load it with:
#   source <(gatehouse completion zsh)
# or put it in a directory on $fpath as _gatehouse.
_gatehouse() {
  local -a commands
  commands=(
`)
	for _, c := range commands {
		fmt.Fprintf(&b, "    '%s:%s'\n", c.name, zshQuote(c.summary))
	}
	b.WriteString(`  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'gatehouse command' commands
    return
  fi
  case $words[2] in
`)
	for _, c := range commands {
		var specs []string
		for _, f := range c.flags {
			spec := "'-" + f.name + "[" + zshQuote(f.doc) + "]"
			switch {
			case f.file:
				spec += ":file:_files"
			case f.arg != "":
				spec += ":" + strings.ToLower(f.arg) + ":"
			}
			specs = append(specs, spec+"'")
		}
		specs = append(specs, "'--help[show help]'")
		switch {
		case c.name == "help":
			specs = append(specs, "'1:command:("+strings.Join(commandNames(), " ")+")'")
		case c.name == "audit":
			specs = append(specs, "'1:subcommand:(verify)'", "'2:audit file:_files'")
		case len(c.words) > 0:
			specs = append(specs, "'1:"+c.name+":("+strings.Join(c.words, " ")+")'")
		}
		fmt.Fprintf(&b, "    %s) _arguments %s ;;\n", c.name, strings.Join(specs, " "))
	}
	b.WriteString(`  esac
}
if [[ "${funcstack[1]}" == "_gatehouse" ]]; then
  _gatehouse "$@"
else
  compdef _gatehouse gatehouse
fi
`)
	return b.String()
}

// zshQuote makes s safe inside '...' and [...] in an _arguments spec.
func zshQuote(s string) string {
	r := strings.NewReplacer("'", "'\\''", "[", "(", "]", ")", ":", " -")
	return r.Replace(s)
}

func appendNew(l []string, vs ...string) []string {
	for _, v := range vs {
		if !slices.Contains(l, v) {
			l = append(l, v)
		}
	}
	return l
}
