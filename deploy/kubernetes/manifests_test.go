// Package kubernetes holds the Kubernetes manifests of Gatehouse; its test
// decodes each strictly into the k8s.io/api types, so that a misspelt or
// misplaced field fails, and checks that they fit together.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/config"
)

// manifests decodes every *.yaml file here strictly: unknown fields,
// duplicate keys and wrong types are errors.
type manifests struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	configMap  *corev1.ConfigMap
	pdb        *policyv1.PodDisruptionBudget
	hpa        *autoscalingv2.HorizontalPodAutoscaler
}

func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("\n---")) {
			t.Errorf("%s: one object per file", f)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(data, &tm); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			m.deployment = &appsv1.Deployment{}
			obj = m.deployment
		case "v1 Service":
			m.service = &corev1.Service{}
			obj = m.service
		case "v1 ConfigMap":
			m.configMap = &corev1.ConfigMap{}
			obj = m.configMap
		case "policy/v1 PodDisruptionBudget":
			m.pdb = &policyv1.PodDisruptionBudget{}
			obj = m.pdb
		case "autoscaling/v2 HorizontalPodAutoscaler":
			m.hpa = &autoscalingv2.HorizontalPodAutoscaler{}
			obj = m.hpa
		default:
			t.Fatalf("%s: no test decodes %s %s; add it to load", f, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if m.deployment == nil || m.service == nil || m.configMap == nil || m.pdb == nil || m.hpa == nil {
		t.Fatalf("want a Deployment, Service, ConfigMap, PodDisruptionBudget and HorizontalPodAutoscaler; got %+v", m)
	}
	return m
}

// TestStrictDecodingCatchesTypos makes sure the decoding above would fail
// on a misspelt field, so that the test is not vacuous.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	bad := "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 3\n"
	if err := yaml.UnmarshalStrict([]byte(bad), &appsv1.Deployment{}); err == nil {
		t.Fatal("a misspelt field decoded")
	}
}

func TestManifests(t *testing.T) {
	m := load(t)
	d := m.deployment
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The config in the ConfigMap loads.
	data, ok := m.configMap.Data["gatehouse.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no gatehouse.yaml")
	}
	cfg, err := config.Parse("gatehouse.yaml", []byte(data))
	if err != nil {
		t.Fatalf("the ConfigMap's gatehouse.yaml does not load:\n%v", err)
	}

	// The container reads the file the ConfigMap is mounted as.
	var cfgPath string
	for i, a := range c.Args {
		if a == "-c" && i+1 < len(c.Args) {
			cfgPath = c.Args[i+1]
		}
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == m.configMap.Name &&
				filepath.Join(vm.MountPath, "gatehouse.yaml") == cfgPath && vm.ReadOnly {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the container reads %q, which is not the ConfigMap %q mounted read-only", cfgPath, m.configMap.Name)
	}

	// Probes hit the admin listener's /healthz and /readyz.
	adminPort := port(t, cfg.GetAdmin().GetAddress())
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", what)
			return
		}
		got := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			got = named[p.HTTPGet.Port.StrVal]
		}
		if p.HTTPGet.Path != path || got != adminPort {
			t.Errorf("%s: probes %s on port %d, want %s on the admin port %d", what, p.HTTPGet.Path, got, path, adminPort)
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")

	// Graceful termination: the grace period covers the preStop sleep and
	// the drain.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("want a preStop sleep")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	drain := config.ShutdownGrace(cfg)
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds is not set")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace < preStop+drain || grace > preStop+drain+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v, want preStop %v + shutdown_grace %v plus a little slack", grace, preStop, drain)
	}

	// Non-root, read-only root file system, no privilege escalation.
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the container must have a read-only root file system")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container must not allow privilege escalation")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("the container needs CPU and memory requests and a memory limit")
	}

	// The Redis password comes from a Secret, through the variable the
	// config names.
	want := strings.TrimSuffix(strings.TrimPrefix(cfg.GetQuota().GetStore().GetRedis().GetPassword(), "${"), "}")
	found := false
	for _, e := range c.Env {
		if e.Name == want && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.Value == "" {
			found = true
		}
	}
	if want == "" || !found {
		t.Errorf("the Redis password (%q in the config) must come from a Secret through the environment", want)
	}

	// Every keys file the config reads is in a Secret mounted read-only.
	for i, ks := range cfg.GetAuthentication().GetApiKeys() {
		f := ks.GetKeysFile()
		if f == "" {
			continue
		}
		fromSecret := false
		for _, vm := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.Secret != nil && vm.ReadOnly && filepath.Dir(f) == filepath.Clean(vm.MountPath) {
					fromSecret = true
				}
			}
		}
		if !fromSecret {
			t.Errorf("authentication.api_keys[%d].keys_file %s is not in a Secret mounted read-only", i, f)
		}
	}

	// The admin listener binds every interface (the kubelet probes it), so
	// its API must need credentials; the probes stay open (the kubelet
	// sends none): admin.auth exempts them.
	if a := cfg.GetAdmin(); !strings.HasPrefix(a.GetAddress(), "127.") && a.GetAuth() == nil {
		t.Errorf("the admin listener %s is reachable from the pod network without admin.auth", a.GetAddress())
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p != nil && p.HTTPGet != nil && len(p.HTTPGet.HTTPHeaders) > 0 {
			t.Errorf("probe %s sends headers: the probes need no credentials", p.HTTPGet.Path)
		}
	}

	// The Service, the PDB and the HPA point at the Deployment.
	sel := d.Spec.Selector.MatchLabels
	for what, s := range map[string]map[string]string{
		"Service":             m.service.Spec.Selector,
		"PodDisruptionBudget": m.pdb.Spec.Selector.MatchLabels,
	} {
		if fmt.Sprint(s) != fmt.Sprint(sel) {
			t.Errorf("%s selects %v, the Deployment %v", what, s, sel)
		}
	}
	for k, v := range sel {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the pod template lacks the selector label %s=%s", k, v)
		}
	}
	edgePort := port(t, cfg.GetListeners()[0].GetAddress())
	if len(m.service.Spec.Ports) == 0 || named[m.service.Spec.Ports[0].TargetPort.StrVal] != edgePort {
		t.Errorf("the Service must target the edge listener's port %d", edgePort)
	}
	for _, p := range m.service.Spec.Ports {
		if named[p.TargetPort.StrVal] == adminPort {
			t.Error("the Service exposes the admin listener")
		}
	}
	ref := m.hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Name {
		t.Errorf("the HPA scales %s %s, not the Deployment %s", ref.Kind, ref.Name, d.Name)
	}
	if m.hpa.Spec.MinReplicas == nil || *m.hpa.Spec.MinReplicas < 2 {
		t.Error("the HPA should keep at least two replicas, for the PDB to allow drains")
	}
}

// port returns the port of a host:port address.
func port(t *testing.T, addr string) int32 {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	var p int32
	if _, err := fmt.Sscan(addr[i+1:], &p); err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}
