package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestHelp: every command explains itself with --help (exit 0, stdout),
// with a usage line, flags and examples; golden files hold the text.
func TestHelp(t *testing.T) {
	for _, c := range commands {
		for _, form := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			var stdout, stderr bytes.Buffer
			if code := run(form, &stdout, &stderr); code != 0 {
				t.Errorf("%v: exit status %d\n%s", form, code, &stderr)
			}
			if stderr.Len() != 0 {
				t.Errorf("%v: stderr: %s", form, &stderr)
			}
			out := stdout.String()
			for _, want := range []string{"usage: gatehouse " + c.name, "\nexamples:\n  gatehouse " + c.name} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: no %q in\n%s", form, want, out)
				}
			}
			if form[1] == "--help" {
				golden(t, filepath.Join("help", c.name+".golden"), out)
			}
		}
		// The top-level usage lists the command.
		if !strings.Contains(usage, "\n  "+c.name) {
			t.Errorf("the usage text does not list %s", c.name)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help", "frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("help of an unknown command: exit status %d, want 2", code)
	}
}

// TestHelpDocumentsEveryFlag parses each command's flags the way it does
// and checks that its help documents each one.
func TestHelpDocumentsEveryFlag(t *testing.T) {
	defined := map[string][]string{
		"serve":    {"c"},
		"validate": {"c"},
		"init":     {"backend", "o", "force", "listen", "admin", "timeout"},
		"demo":     {"listen", "admin"},
	}
	for name, flags := range defined {
		c, ok := findCommand(name)
		if !ok {
			t.Fatalf("no help for %s", name)
		}
		var documented []string
		for _, f := range c.flags {
			documented = append(documented, f.name)
		}
		if strings.Join(documented, ",") != strings.Join(flags, ",") {
			t.Errorf("%s: help documents flags %v, the command defines %v", name, documented, flags)
		}
		for _, f := range flags {
			var stdout, stderr bytes.Buffer
			// An undefined flag is refused with exit status 2 and
			// "flag provided but not defined"; a defined one is not.
			run([]string{name, "-" + f + "=x", "-no-such-flag"}, &stdout, &stderr)
			if strings.Contains(stderr.String(), "not defined: -"+f) {
				t.Errorf("%s: -%s is documented but not defined", name, f)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	out := stdout.String()
	for _, want := range []string{"gatehouse ", "module:", "github.com/gatehouse-dev/gatehouse", "revision:", "go:", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"completion", shell}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s: exit status %d: %s", shell, code, &stderr)
		}
		script := stdout.String()
		for _, c := range commands {
			if !strings.Contains(script, c.name) {
				t.Errorf("%s: the script does not complete %s", shell, c.name)
			}
		}
		golden(t, filepath.Join("completion", shell+".golden"), script)
		// The shell itself must read the script; a missing shell fails the
		// test (.ci/run installs zsh).
		path, err := exec.LookPath(shell)
		if err != nil {
			t.Fatalf("%s is needed to check its completion script: %v", shell, err)
		}
		cmd := exec.Command(path, "-n")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", shell, err, out)
		}
	}
	{
		path, err := exec.LookPath("bash")
		if err != nil {
			t.Fatalf("bash is needed to run its completion: %v", err)
		}
		// Complete "gatehouse ini" and "gatehouse completion z" in bash.
		var stdout bytes.Buffer
		run([]string{"completion", "bash"}, &stdout, &bytes.Buffer{})
		script := stdout.String() + `
COMP_WORDS=(gatehouse ini); COMP_CWORD=1; _gatehouse; echo "${COMPREPLY[*]}"
COMP_WORDS=(gatehouse completion z); COMP_CWORD=2; _gatehouse; echo "${COMPREPLY[*]}"
COMP_WORDS=(gatehouse serve -); COMP_CWORD=2; _gatehouse; echo "${COMPREPLY[*]}"
`
		out, err := exec.Command(path, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		if got, want := string(out), "init\nzsh\n-c --help\n"; got != want {
			t.Errorf("bash completes:\n%s\nwant:\n%s", got, want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"completion", "fish"}, &stdout, &stderr); code != 2 {
		t.Errorf("completion fish: exit status %d, want 2", code)
	}
}

func TestSchemaCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"schema"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d: %s", code, &stderr)
	}
	want, err := os.ReadFile("../../config/gatehouse.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Error("gatehouse schema does not print config/gatehouse.schema.json")
	}
}
