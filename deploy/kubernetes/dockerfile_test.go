package kubernetes

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is what the test reads of the repository's Dockerfile: its
// stages' base images, and the final stage's user, ports, entrypoint and
// labels. There is no container engine here, so the image is not built;
// this keeps the file and the manifests from drifting apart.
type dockerfile struct {
	from       []string // base image of each stage
	user       string
	expose     []int32
	entrypoint []string
	cmd        []string
	labels     map[string]string
}

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{labels: map[string]string{}}
	// Join continued lines, drop comments.
	var lines []string
	cur := ""
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur += s + " "
			continue
		}
		cur += l
		if strings.TrimSpace(cur) != "" {
			lines = append(lines, strings.TrimSpace(cur))
		}
		cur = ""
	}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d.from = append(d.from, strings.Fields(rest)[0])
			d.user, d.expose, d.entrypoint, d.cmd = "", nil, nil, nil // per stage: keep the last
			d.labels = map[string]string{}
		case "USER":
			d.user = rest
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("EXPOSE %s: %v", p, err)
				}
				d.expose = append(d.expose, int32(n))
			}
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				t.Fatalf("%s must be in exec (JSON) form: %v", instr, err)
			}
			if strings.ToUpper(instr) == "CMD" {
				d.cmd = argv
			} else {
				d.entrypoint = argv
			}
		case "LABEL":
			for _, f := range splitLabels(rest) {
				k, v, _ := strings.Cut(f, "=")
				d.labels[k] = strings.Trim(v, `"`)
			}
		}
	}
	return d
}

// splitLabels splits LABEL k="v w" k2=v2 into its pairs.
func splitLabels(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// TestDockerfileMatchesManifests checks the Dockerfile against the
// Deployment and go.mod: multi-stage, a static non-root final image whose
// user is the pod's, the container ports exposed, the binary as the
// entrypoint so that the Deployment's args are its arguments, the image
// name's repository in the source label, and the Go version of go.mod.
func TestDockerfileMatchesManifests(t *testing.T) {
	m := load(t)
	pod := m.deployment.Spec.Template.Spec
	c := pod.Containers[0]
	d := readDockerfile(t, "../../Dockerfile")

	if len(d.from) < 2 {
		t.Fatalf("want a multi-stage build, got stages %v", d.from)
	}
	final := d.from[len(d.from)-1]
	if final != "scratch" && !strings.HasPrefix(final, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s, want scratch or distroless/static", final)
	}
	uid, gid, _ := strings.Cut(d.user, ":")
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsUser == nil {
		t.Fatal("the pod sets no runAsUser")
	}
	if u := strconv.FormatInt(*pod.SecurityContext.RunAsUser, 10); u != uid {
		t.Errorf("Dockerfile USER %q, the pod runs as %s", d.user, u)
	}
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("Dockerfile USER %q, want a numeric non-root user", d.user)
	}
	if g := pod.SecurityContext.RunAsGroup; g != nil && strconv.FormatInt(*g, 10) != gid {
		t.Errorf("Dockerfile group %q, the pod's %d", gid, *g)
	}
	for _, p := range c.Ports {
		if !slices.Contains(d.expose, p.ContainerPort) {
			t.Errorf("container port %s (%d) is not EXPOSEd: %v", p.Name, p.ContainerPort, d.expose)
		}
	}
	if len(d.entrypoint) != 1 || !strings.HasSuffix(d.entrypoint[0], "/gatehouse") {
		t.Errorf("ENTRYPOINT %q, want the gatehouse binary alone (the Deployment gives args)", d.entrypoint)
	}
	if len(c.Command) > 0 {
		t.Errorf("the Deployment overrides the entrypoint with %q", c.Command)
	}
	if len(d.cmd) > 0 && d.cmd[0] != c.Args[0] {
		t.Errorf("CMD %q and the Deployment's args %q run different commands", d.cmd, c.Args)
	}
	image, _, _ := strings.Cut(c.Image, ":")
	repo := strings.TrimPrefix(image, "ghcr.io/")
	if src := d.labels["org.opencontainers.image.source"]; image == repo || src != "https://github.com/"+repo {
		t.Errorf("image %s: want a ghcr.io image whose org.opencontainers.image.source is its repository, got %q", c.Image, src)
	}

	data, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := ""
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "go "); ok {
			goVersion = strings.TrimSpace(v)
		}
	}
	if want := "golang:" + goVersion; goVersion == "" || !strings.HasPrefix(d.from[0], want) {
		t.Errorf("build stage FROM %s, want %s (go.mod's go line)", d.from[0], want)
	}
}
