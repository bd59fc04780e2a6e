// Package examples checks the deployment files of the examples against
// the timing defaults of the code they run: a Kubernetes manifest, a
// Nomad job or a systemd unit whose sums no longer hold (a drain bound
// raised, a timeout lowered) fails here, not in production.
package examples

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/goccy/go-yaml"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// drainBounds is the longest a standalone child drains with its default
// bounds: what an orchestrator's grace period must cover after the lame
// duck.
const drainBounds = child.DefaultCloseTimeout + child.DefaultDrainTimeout + child.DefaultShutdownTimeout + child.DefaultTaskTimeout

// propagation is the least lame duck (or shutdown delay) a manifest may
// give the endpoint removal to reach kube-proxy and the load balancers
// beyond the readiness probe's own detection: 5 to 15 s is what is
// reported; 5 s is the floor.
const propagation = 5 * time.Second

// ---- Kubernetes ----

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"` // ConfigMap
	Spec struct {
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				MaxSurge       any `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
				Containers                    []k8sContainer `yaml:"containers"`
				Volumes                       []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// detection is how long the probe takes to see a failure, with
// Kubernetes' defaults (10 s, 3) for what is left out.
func (p *k8sProbe) detection() time.Duration {
	period, failures := p.PeriodSeconds, p.FailureThreshold
	if period == 0 {
		period = 10
	}
	if failures == 0 {
		failures = 3
	}
	return time.Duration(period*failures) * time.Second
}

func (c *k8sContainer) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// port resolves a probe's port, a number or a port's name.
func (c *k8sContainer) port(p any) int {
	switch v := p.(type) {
	case uint64:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

func readYAML(t *testing.T, path string) []k8sObject {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, o)
	}
	return objs
}

// checkRollingUpdate: a new pod is ready before an old one goes.
func checkRollingUpdate(t *testing.T, d *k8sObject) {
	t.Helper()
	ru := d.Spec.Strategy.RollingUpdate
	if d.Spec.Strategy.Type != "RollingUpdate" || fmt.Sprint(ru.MaxUnavailable) != "0" && ru.MaxUnavailable != "0%" {
		t.Errorf("deployment %s: want a RollingUpdate with maxUnavailable: 0, have %s with %v", d.Metadata.Name, d.Spec.Strategy.Type, ru.MaxUnavailable)
	}
	if s := fmt.Sprint(ru.MaxSurge); s == "0" || s == "0%" {
		t.Errorf("deployment %s: maxSurge 0 with maxUnavailable 0 cannot roll", d.Metadata.Name)
	}
}

func grace(t *testing.T, d *k8sObject) time.Duration {
	t.Helper()
	g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if g == nil {
		return 30 * time.Second // Kubernetes' default
	}
	return time.Duration(*g) * time.Second
}

// The standalone Deployment: the lame duck outlasts the readiness probe's
// detection and the propagation floor, and the grace period outlasts the
// lame duck, any preStop sleep and the child's drain bounds.
func TestKubernetes_standalone(t *testing.T) {
	objs := readYAML(t, "kubernetes/orders.yaml")
	var deployments int
	for i := range objs {
		d := &objs[i]
		if d.Kind != "Deployment" {
			continue
		}
		deployments++
		checkRollingUpdate(t, d)
		c := &d.Spec.Template.Spec.Containers[0]
		p := c.ReadinessProbe
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || c.port(p.HTTPGet.Port) != 8080 {
			t.Fatalf("want a readinessProbe on /healthz of port 8080 (child.Server.Health), have %+v", p)
		}
		v, _ := c.env(child.EnvLameDuck)
		lameDuck, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: want a duration", child.EnvLameDuck, v)
		}
		var preStop time.Duration
		if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
		if delay := lameDuck + preStop; delay < p.detection() || delay < propagation {
			t.Errorf("lame duck %v + preStop %v: want at least the probe's detection (%v) and %v of propagation", lameDuck, preStop, p.detection(), propagation)
		}
		if need := preStop + lameDuck + drainBounds; grace(t, d) <= need {
			t.Errorf("terminationGracePeriodSeconds %v: want above preStop %v + lame duck %v + drain bounds %v = %v", grace(t, d), preStop, lameDuck, drainBounds, need)
		}
		if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz" {
			t.Errorf("a livenessProbe on /healthz kills the pod in its lame duck (503)")
		}
		t.Logf("grace %v > lame duck %v + drain bounds %v", grace(t, d), lameDuck, drainBounds)
	}
	if deployments != 1 {
		t.Fatalf("want 1 Deployment, have %d", deployments)
	}
}

// The Deployment with baton as PID 1: baton is the entrypoint, /readyz is
// the readinessProbe and /livez the livenessProbe, on the health block's
// port; the grace period outlasts shutdown_delay and the stop timeout;
// shutdown_delay outlasts the probe's detection.
func TestKubernetes_batonAsPID1(t *testing.T) {
	objs := readYAML(t, "kubernetes/orders-baton.yaml")
	configs := map[string]string{}
	for _, o := range objs {
		if o.Kind == "ConfigMap" {
			configs[o.Metadata.Name] = o.Data["config.hcl"]
		}
	}
	var deployments int
	for i := range objs {
		d := &objs[i]
		if d.Kind != "Deployment" {
			continue
		}
		deployments++
		checkRollingUpdate(t, d)
		c := &d.Spec.Template.Spec.Containers[0]
		if len(c.Command) < 4 || !strings.HasSuffix(c.Command[0], "/baton") || c.Command[1] != "run" || c.Command[2] != "-config" {
			t.Fatalf("want baton run -config FILE as the container's command (PID 1), have %q", c.Command)
		}
		var src string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil {
				src = configs[v.ConfigMap.Name]
			}
		}
		f := parseBatonConfig(t, "orders-baton.yaml config.hcl", src)
		_, healthPort, _ := strings.Cut(f.Health.Address, ":")
		for name, p := range map[string]*k8sProbe{"/readyz": c.ReadinessProbe, "/livez": c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || strconv.Itoa(c.port(p.HTTPGet.Port)) != healthPort {
				t.Errorf("want a probe on %s of the health port %s, have %+v", name, healthPort, p)
			}
		}
		if f.ShutdownDelay < c.ReadinessProbe.detection() || f.ShutdownDelay < propagation {
			t.Errorf("shutdown_delay %v: want at least the readiness probe's detection (%v) and %v of propagation", f.ShutdownDelay, c.ReadinessProbe.detection(), propagation)
		}
		if need := f.ShutdownDelay + longestStop(f); grace(t, d) <= need {
			t.Errorf("terminationGracePeriodSeconds %v: want above shutdown_delay + stop timeout = %v", grace(t, d), need)
		}
		t.Logf("grace %v > shutdown_delay %v + stop timeout %v", grace(t, d), f.ShutdownDelay, longestStop(f))
	}
	if deployments != 1 {
		t.Fatalf("want 1 Deployment, have %d", deployments)
	}
}

// parseBatonConfig parses a config file with baton's own parser.
func parseBatonConfig(t *testing.T, name, src string) *config.File {
	t.Helper()
	if src == "" {
		t.Fatalf("%s: no config", name)
	}
	f, diags := config.Parse([]byte(src), name, t.TempDir())
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			t.Fatalf("%s", config.FormatDiagnostic(d))
		}
	}
	return f
}

// longestStop is the longest stop timeout of f's programs; the child
// fits its drain bounds in it (BATON_STOP_TIMEOUT), so it is how long a
// program drains at most.
func longestStop(f *config.File) time.Duration {
	var d time.Duration
	for _, p := range f.Programs {
		d = max(d, p.Stop.Timeout)
	}
	return d
}

// ---- Nomad ----

// hclBlock returns the first nested block of type typ, and fails when
// there is none.
func hclBlock(t *testing.T, b *hclsyntax.Body, typ string) *hclsyntax.Body {
	t.Helper()
	for _, blk := range b.Blocks {
		if blk.Type == typ {
			return blk.Body
		}
	}
	t.Fatalf("no %s block", typ)
	return nil
}

func hclAttr(t *testing.T, b *hclsyntax.Body, name string) cty.Value {
	t.Helper()
	a, ok := b.Attributes[name]
	if !ok {
		t.Fatalf("no attribute %s", name)
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", name, diags.Error())
	}
	return v
}

func hclDuration(t *testing.T, b *hclsyntax.Body, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(hclAttr(t, b, name).AsString())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// nomadMaxKillTimeout is the Nomad client's default max_kill_timeout,
// which caps every kill_timeout.
const nomadMaxKillTimeout = 30 * time.Second

// The Nomad job: kill_signal is one baton drains on, kill_timeout
// outlasts baton's shutdown_delay and stop timeout (and fits under the
// client's default cap), updates go one at a time with a canary and an
// automatic revert, and the template that renders baton's config
// signals it SIGHUP, a reload.
func TestNomad_job(t *testing.T) {
	src, err := os.ReadFile("nomad/orders.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	file, diags := hclsyntax.ParseConfig(src, "orders.nomad.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	job := hclBlock(t, file.Body.(*hclsyntax.Body), "job")
	up := hclBlock(t, job, "update")
	if n, _ := hclAttr(t, up, "max_parallel").AsBigFloat().Int64(); n != 1 {
		t.Errorf("update.max_parallel: want 1, have %d", n)
	}
	if n, _ := hclAttr(t, up, "canary").AsBigFloat().Int64(); n < 1 {
		t.Errorf("update.canary: want at least 1, have %d", n)
	}
	if !hclAttr(t, up, "auto_revert").True() {
		t.Error("update.auto_revert: want true")
	}
	group := hclBlock(t, job, "group")
	groupDelay := hclDuration(t, group, "shutdown_delay")
	check := hclBlock(t, hclBlock(t, group, "service"), "check")
	if path := hclAttr(t, check, "path").AsString(); path != "/readyz" {
		t.Errorf("service check: want /readyz, have %s", path)
	}
	task := hclBlock(t, group, "task")
	switch sig := hclAttr(t, task, "kill_signal").AsString(); sig {
	case "SIGTERM", "SIGINT":
	default:
		t.Errorf("kill_signal %s: baton drains on SIGTERM or SIGINT", sig)
	}
	kill := hclDuration(t, task, "kill_timeout")
	tpl := hclBlock(t, task, "template")
	if m, s := hclAttr(t, tpl, "change_mode").AsString(), hclAttr(t, tpl, "change_signal").AsString(); m != "signal" || s != "SIGHUP" {
		t.Errorf("template: want change_mode signal with SIGHUP (baton's reload), have %s %s", m, s)
	}
	dest := hclAttr(t, tpl, "destination").AsString()
	var args []string
	for _, v := range hclAttr(t, hclBlock(t, task, "config"), "args").AsValueSlice() {
		args = append(args, v.AsString())
	}
	if strings.Join(args, " ") != "run -config "+dest {
		t.Errorf("want baton run -config %s (the template's destination), have %q", dest, args)
	}

	// Render the template as Nomad does (Go templates), with stand-ins.
	rendered := renderNomadTemplate(t, hclAttr(t, tpl, "data").AsString())
	f := parseBatonConfig(t, "orders.nomad.hcl template", rendered)
	if need := f.ShutdownDelay + longestStop(f); kill <= need {
		t.Errorf("kill_timeout %v: want above baton's shutdown_delay + stop timeout = %v", kill, need)
	}
	if kill > nomadMaxKillTimeout {
		t.Errorf("kill_timeout %v is above the Nomad client's default max_kill_timeout (%v), which would cut it", kill, nomadMaxKillTimeout)
	}
	if f.Health.Address == "" {
		t.Error("the rendered config has no health block: the check on /readyz has nothing to ask")
	}
	t.Logf("kill_timeout %v > shutdown_delay %v + stop timeout %v (group shutdown_delay %v before the signal)", kill, f.ShutdownDelay, longestStop(f), groupDelay)
}

func renderNomadTemplate(t *testing.T, data string) string {
	t.Helper()
	stand := map[string]string{
		"NOMAD_IP_http": "10.0.0.5", "NOMAD_PORT_http": "8080",
		"NOMAD_IP_health": "10.0.0.5", "NOMAD_PORT_health": "9100",
		"NOMAD_TASK_DIR": "/var/nomad/alloc/a/baton/local", "NOMAD_ALLOC_DIR": "/var/nomad/alloc/a/alloc",
	}
	tmpl, err := template.New("config").Option("missingkey=error").Funcs(template.FuncMap{
		"env": func(k string) (string, error) {
			v, ok := stand[k]
			if !ok {
				return "", fmt.Errorf("no stand-in for %s", k)
			}
			return v, nil
		},
	}).Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, nil); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// ---- systemd ----

// unitValues reads the KEY=VALUE lines of a section of a unit file.
func unitValues(t *testing.T, path, section string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vals := map[string]string{}
	var in bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			in = line == "["+section+"]"
		case in:
			if k, v, ok := strings.Cut(line, "="); ok {
				vals[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	return vals
}

// The systemd unit: baton alone gets SIGTERM (KillMode=mixed), says READY
// (Type=notify), and TimeoutStopSec outlasts the config's shutdown_delay
// and longest stop timeout.
func TestSystemd_unit(t *testing.T) {
	svc := unitValues(t, "deploy/baton.service", "Service")
	if svc["KillMode"] != "mixed" || svc["Type"] != "notify" {
		t.Errorf("want KillMode=mixed and Type=notify, have %q and %q", svc["KillMode"], svc["Type"])
	}
	secs, err := strconv.Atoi(svc["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: want seconds", svc["TimeoutStopSec"])
	}
	src, err := os.ReadFile("deploy/config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The program's user exists on the server, not necessarily here.
	src = regexp.MustCompile(`(?m)^\s*user\s*=.*$`).ReplaceAll(src, nil)
	f := parseBatonConfig(t, "deploy/config.hcl", string(src))
	stop := time.Duration(secs) * time.Second
	if need := f.ShutdownDelay + longestStop(f); stop <= need {
		t.Errorf("TimeoutStopSec %v: want above shutdown_delay + stop timeout = %v", stop, need)
	}
	if longestStop(f)*9/10 < drainBounds {
		t.Logf("the child scales its drain bounds (%v) down to 90%% of the stop timeout %v", drainBounds, longestStop(f))
	}
	t.Logf("TimeoutStopSec %v > shutdown_delay %v + stop timeout %v", stop, f.ShutdownDelay, longestStop(f))
}
