package edge

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/auth"
	"github.com/gatehouse-dev/gatehouse/routing"
	"github.com/gatehouse-dev/gatehouse/upstream"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// What a reload applies, and what needs a restart.
//
// A reload applies the top-level fields in liveFields: the route table is
// rebuilt and swapped atomically (calls in flight keep the table they
// started with), the backend pool is updated (connections of backends that
// stay are kept; removed backends drain), the shutdown grace is read at
// shutdown, and the log level follows logging.level when the gateway was
// given a *slog.LevelVar (WithLogLevel).
//
// Every other field (listeners, admin, telemetry, audit, authentication,
// quota, rest: what is bound to a socket or built once at start) needs a
// restart. A reload that changes such
// fields is still applied for the rest: the fields are named in a warning
// log line and in the admin API's GetConfig (the gatehouse-pending-restart
// header), and the effective configuration keeps their running values, so
// that GetConfig shows what is in force, not what the file says.
// Refusing the whole reload instead would hold back a route fix because
// someone also touched a listener limit.
var liveFields = map[protoreflect.Name]bool{
	"routes":         true,
	"backends":       true,
	"shutdown_grace": true,
	"logging":        true, // applied only with WithLogLevel; see isLive
}

// ReloadStats describes the reloads of a Gateway since it was built.
type ReloadStats struct {
	// Source is the config file, empty when the gateway has none.
	Source string
	// LoadedAt is when the configuration in force was put in force: at New,
	// or at the last successful reload.
	LoadedAt time.Time
	// Reloads counts the reloads attempted, successful or not.
	Reloads int64
	// Failures counts the reloads refused.
	Failures int64
	// LastErrors holds the errors of the last reload, one line each, when it
	// was refused; nil after a successful one.
	LastErrors []string
	// PendingRestart names the fields (e.g. "listeners[0].address") whose
	// configured value differs from the running one and that only a restart
	// applies.
	PendingRestart []string
}

// ReloadError is the error of a refused reload. The configuration in force
// keeps serving.
type ReloadError struct {
	// Source names what was refused: the config file, or "reload" for a
	// config passed to Reload.
	Source string
	// Lines holds one line per problem.
	Lines []string
	// Err is the cause: a *config.Error (errors.As finds it), a route that
	// does not compile, a file that cannot be read.
	Err error
}

// Error returns every problem, separated by "; ".
func (e *ReloadError) Error() string {
	return fmt.Sprintf("gatehouse: config reload refused (%d error(s); the configuration in force keeps serving): %s",
		len(e.Lines), strings.Join(e.Lines, "; "))
}

// Unwrap returns the cause.
func (e *ReloadError) Unwrap() error { return e.Err }

// reloadState is the live-configuration state of a Gateway.
type reloadState struct {
	// run serializes reloads: the config in force, the pool and the table
	// change together, one reload at a time.
	run sync.Mutex

	mu         sync.Mutex // guards the fields below
	cfg        *configv1.Config
	loadedAt   time.Time
	reloads    int64
	failures   int64
	lastErrors []string
	pending    []string
	fileHash   [sha256.Size]byte // of the file content last read, loaded or not
	hashKnown  bool
}

// initReload records cfg as the configuration in force. New calls it.
func (g *Gateway) initReload(cfg *configv1.Config) {
	g.reload.cfg = cfg
	g.reload.loadedAt = time.Now()
	if g.opts.levelVar != nil {
		g.opts.levelVar.Set(logLevel(cfg))
	}
}

// Config returns the effective configuration: the one in force, with the
// running values of fields that need a restart. It must not be modified.
func (g *Gateway) Config() *configv1.Config {
	g.reload.mu.Lock()
	defer g.reload.mu.Unlock()
	return g.reload.cfg
}

// ReloadStats returns the reload counters and the state of the last reload.
func (g *Gateway) ReloadStats() ReloadStats {
	g.reload.mu.Lock()
	defer g.reload.mu.Unlock()
	return ReloadStats{
		Source:         g.opts.configFile,
		LoadedAt:       g.reload.loadedAt,
		Reloads:        g.reload.reloads,
		Failures:       g.reload.failures,
		LastErrors:     slices.Clone(g.reload.lastErrors),
		PendingRestart: slices.Clone(g.reload.pending),
	}
}

// Reload puts cfg in force. cfg is checked exactly as a config file is (the
// config loader's rules, then the route table is compiled) before anything
// changes; when it does not pass, Reload returns a *ReloadError and the
// configuration in force keeps serving. Otherwise the backend pool is
// updated and the route table swapped atomically: calls in flight finish on
// the table they started with and open streams are not disturbed. Reloads
// are serialized.
func (g *Gateway) Reload(ctx context.Context, cfg *configv1.Config) error {
	return g.reloadWith(ctx, "call", "reload", func() (*configv1.Config, error) {
		// A round trip through the loader runs every rule the loader
		// runs, cross-references included, on a config built in code.
		data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		return config.Parse("reload", data)
	})
}

// ReloadFile rereads the config file given with WithConfigFile and puts it
// in force as Reload does. `gatehouse serve` calls it on SIGHUP.
func (g *Gateway) ReloadFile(ctx context.Context) error {
	return g.reloadFile(ctx, "call")
}

// errNoConfigFile is the error of a file reload on a gateway without one.
var errNoConfigFile = errors.New("gatehouse: no config file to reload: the gateway was not given one (WithConfigFile)")

// reloadFile reloads the config file; trigger names what asked, for logs.
func (g *Gateway) reloadFile(ctx context.Context, trigger string) error {
	path := g.opts.configFile
	if path == "" {
		return errNoConfigFile
	}
	return g.reloadWith(ctx, trigger, path, func() (*configv1.Config, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		g.noteFileHash(sha256.Sum256(data))
		return config.Parse(path, data)
	})
}

// reloadIfChanged reloads the config file when its content differs from the
// content last read. The watcher calls it.
func (g *Gateway) reloadIfChanged(ctx context.Context) {
	path := g.opts.configFile
	data, err := os.ReadFile(path)
	if err != nil {
		// Between the steps of an atomic replace the file may be missing
		// for a moment; the next event brings it back.
		g.log.Debug("config file not readable; waiting for the next change", "source", path, "error", err)
		return
	}
	sum := sha256.Sum256(data)
	g.reload.mu.Lock()
	same := g.reload.hashKnown && g.reload.fileHash == sum
	g.reload.mu.Unlock()
	if same {
		return
	}
	_ = g.reloadWith(ctx, "watch", path, func() (*configv1.Config, error) {
		g.noteFileHash(sum)
		return config.Parse(path, data)
	})
}

// noteFileHash records the hash of the file content last read.
func (g *Gateway) noteFileHash(sum [sha256.Size]byte) {
	g.reload.mu.Lock()
	g.reload.fileHash, g.reload.hashKnown = sum, true
	g.reload.mu.Unlock()
}

// reloadWith loads a config with load and applies it, or refuses it. It
// logs the outcome, counts it and calls the reload hook.
func (g *Gateway) reloadWith(ctx context.Context, trigger, source string, load func() (*configv1.Config, error)) error {
	g.reload.run.Lock()
	applied, err := g.applyConfig(ctx, source, load)
	g.reload.run.Unlock()

	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // not attempted: nothing counted
	}
	g.reload.mu.Lock()
	g.reload.reloads++
	if err != nil {
		g.reload.failures++
	}
	g.reload.mu.Unlock()

	if err != nil {
		var rerr *ReloadError
		if !errors.As(err, &rerr) {
			rerr = &ReloadError{Source: source, Lines: []string{err.Error()}, Err: err}
			err = rerr
		}
		g.reload.mu.Lock()
		g.reload.lastErrors = rerr.Lines
		g.reload.mu.Unlock()
		for _, l := range rerr.Lines {
			g.log.Error("config reload: error", "source", source, "error", l)
		}
		g.log.Error("config reload refused; the configuration in force keeps serving",
			"source", source, "trigger", trigger, "errors", len(rerr.Lines))
	} else {
		g.log.Info("config reloaded", "source", source, "trigger", trigger,
			"routes", len(applied.cfg.GetRoutes()), "backends", len(applied.cfg.GetBackends()),
			"backends_added", applied.added, "backends_removed", applied.removed)
		if len(applied.pending) > 0 {
			g.log.Warn("config reload: these changes need a restart and are not in force",
				"source", source, "fields", applied.pending)
		}
	}
	g.Metrics().ConfigReloaded(err == nil)
	if g.opts.reloadHook != nil {
		g.opts.reloadHook(err == nil)
	}
	return err
}

// applied describes a successful reload.
type applied struct {
	cfg     *configv1.Config // the effective config now in force
	pending []string         // fields that need a restart
	added   []string         // backends added
	removed []string         // backends removed (draining)
}

// applyConfig loads, checks and applies one config. The caller holds
// g.reload.run.
func (g *Gateway) applyConfig(ctx context.Context, source string, load func() (*configv1.Config, error)) (*applied, error) {
	next, err := load()
	if err != nil {
		return nil, refused(source, err)
	}
	table, err := routing.NewTable(next.GetRoutes())
	if err != nil {
		return nil, refused(source, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	g.reload.mu.Lock()
	cur := g.reload.cfg
	g.reload.mu.Unlock()
	eff, pending := g.effective(cur, next)
	if err := checkEffective(source, next, eff); err != nil {
		return nil, refused(source, err)
	}

	// The pool first gets the new backends while keeping the removed ones,
	// so that calls resolving on either table find their backend; then the
	// table is swapped; then the removed backends go (and drain).
	newSpecs := backendSpecs(eff)
	union := slices.Clone(newSpecs)
	var added, removed []string
	inNew := make(map[string]bool, len(newSpecs))
	for _, s := range newSpecs {
		inNew[s.Name] = true
	}
	inCur := make(map[string]bool)
	for _, s := range backendSpecs(cur) {
		inCur[s.Name] = true
		if !inNew[s.Name] {
			union = append(union, s)
			removed = append(removed, s.Name)
		}
	}
	for _, s := range newSpecs {
		if !inCur[s.Name] {
			added = append(added, s.Name)
		}
	}
	if err := g.tls.update(eff); err != nil { // tls.go: backends' TLS files read before anything changes
		return nil, refused(source, err)
	}
	if err := g.pool.Update(union); err != nil {
		return nil, refused(source, err)
	}
	g.router.Swap(table)
	g.reloadSchemas(ctx, eff) // schema.go: descriptor sets reread, reflection fetched again
	if err := g.pool.Update(newSpecs); err != nil {
		// Only a closed pool (a shutdown under way) gets here.
		g.log.Warn("config reload: removing backends", "error", err)
	}
	for _, name := range removed {
		// The health server cannot forget a service: say it is unknown.
		g.health.SetServingStatus("gatehouse.backend."+name, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	}
	if g.opts.levelVar != nil {
		g.opts.levelVar.Set(logLevel(eff))
	}

	g.reload.mu.Lock()
	g.reload.cfg = eff
	g.reload.loadedAt = time.Now()
	g.reload.lastErrors = nil
	g.reload.pending = pending
	g.reload.mu.Unlock()
	return &applied{cfg: eff, pending: pending, added: added, removed: removed}, nil
}

// checkEffective checks the config that would go live: next with the
// running values of the fields that need a restart (eff). next passed the
// loader; the mix may not, when a live field refers to a restart-only one:
// a route requiring an authenticator that only the file has, a quota
// policy naming a route the reload removes. Those are named first with
// their cause; then eff goes through the loader's whole check again, so
// that no other mix goes live unchecked. Errors are a *config.Error whose
// lines name source, the field path and the reason.
func checkEffective(source string, next, eff *configv1.Config) error {
	file := filepath.Base(source)
	var errs []config.FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, config.FieldError{File: file, Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	running, configured := credentialNames(eff), credentialNames(next)
	for i, r := range eff.GetRoutes() {
		for j, name := range r.GetAuth().GetRequire() {
			switch {
			case running[name]:
			case configured[name]:
				add(fmt.Sprintf("routes[%d].auth.require[%d]", i, j),
					"authenticator %q is new and authentication changes need a restart", name)
			default:
				add(fmt.Sprintf("routes[%d].auth.require[%d]", i, j),
					"authenticator %q is not in force (authentication changes need a restart)", name)
			}
		}
	}
	routes := map[string]bool{}
	for _, r := range eff.GetRoutes() {
		routes[r.GetName()] = true
	}
	for i, p := range eff.GetQuota().GetPolicies() {
		for j, name := range p.GetRoutes() {
			if !routes[name] {
				add(fmt.Sprintf("quota.policies[%d].routes[%d]", i, j),
					"route %q is not in the reloaded routes, and quota policies need a restart to change", name)
			}
		}
	}
	if len(errs) > 0 {
		return &config.Error{Errors: errs}
	}
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(eff)
	if err != nil {
		return err
	}
	if _, err := config.Parse(source, data); err != nil {
		return err
	}
	return nil
}

// credentialNames are the names a route's auth.require may give in cfg:
// its authenticators, and mtls and none, which every config has.
func credentialNames(cfg *configv1.Config) map[string]bool {
	names := map[string]bool{auth.MTLS: true, auth.None: true}
	for _, j := range cfg.GetAuthentication().GetJwt() {
		names[j.GetName()] = true
	}
	for _, k := range cfg.GetAuthentication().GetApiKeys() {
		names[k.GetName()] = true
	}
	return names
}

// refused wraps err as a *ReloadError with one line per problem.
func refused(source string, err error) *ReloadError {
	re := &ReloadError{Source: source, Err: err}
	var cerr *config.Error
	if errors.As(err, &cerr) {
		for _, fe := range cerr.Errors {
			re.Lines = append(re.Lines, fe.Error())
		}
		return re
	}
	// A route that does not compile names its field; prefix the file as
	// the loader's lines do.
	msg := err.Error()
	if source != "" && !strings.HasPrefix(msg, "config:") {
		msg = filepath.Base(source) + ": " + msg
	}
	re.Lines = strings.Split(msg, "\n")
	return re
}

// isLive reports whether a top-level field is applied by a reload.
func (g *Gateway) isLive(name protoreflect.Name) bool {
	if name == "logging" {
		return g.opts.levelVar != nil
	}
	return liveFields[name]
}

// effective returns the config to put in force for next, given cur in
// force: next, with cur's values for the fields that need a restart, and the
// paths of those fields where next differs from cur.
func (g *Gateway) effective(cur, next *configv1.Config) (*configv1.Config, []string) {
	eff := proto.Clone(next).(*configv1.Config)
	em, cm := eff.ProtoReflect(), cur.ProtoReflect()
	var pending []string
	fields := em.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if g.isLive(fd.Name()) {
			continue
		}
		pending = appendDiff(pending, string(fd.Name()), fd, cm, em)
		if cm.Has(fd) {
			em.Set(fd, cm.Get(fd))
		} else {
			em.Clear(fd)
		}
	}
	return eff, pending
}

// maxDiffPaths bounds the paths appendDiff reports.
const maxDiffPaths = 32

// appendDiff appends to out the paths of the leaves of field fd that differ
// between messages a and b.
func appendDiff(out []string, path string, fd protoreflect.FieldDescriptor, a, b protoreflect.Message) []string {
	if len(out) >= maxDiffPaths {
		return out
	}
	ha, hb := a.Has(fd), b.Has(fd)
	if !ha && !hb {
		return out
	}
	va, vb := a.Get(fd), b.Get(fd)
	switch {
	case fd.IsList():
		la, lb := va.List(), vb.List()
		for i := range max(la.Len(), lb.Len()) {
			p := fmt.Sprintf("%s[%d]", path, i)
			if i >= la.Len() || i >= lb.Len() {
				out = append(out, p)
				continue
			}
			if fd.Message() != nil {
				out = appendMessageDiff(out, p, la.Get(i).Message(), lb.Get(i).Message())
			} else if !la.Get(i).Equal(lb.Get(i)) {
				out = append(out, p)
			}
		}
	case fd.IsMap():
		if !va.Equal(vb) {
			out = append(out, path)
		}
	case fd.Message() != nil:
		if ha != hb {
			out = append(out, path)
		} else {
			out = appendMessageDiff(out, path, va.Message(), vb.Message())
		}
	default:
		if ha != hb || !va.Equal(vb) {
			out = append(out, path)
		}
	}
	if len(out) > maxDiffPaths {
		out = out[:maxDiffPaths]
	}
	return out
}

// appendMessageDiff appends the differing leaves of two messages of one
// type.
func appendMessageDiff(out []string, path string, a, b protoreflect.Message) []string {
	if proto.Equal(a.Interface(), b.Interface()) {
		return out
	}
	fields := a.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		out = appendDiff(out, path+"."+string(fd.Name()), fd, a, b)
	}
	return out
}

// backendSpecs returns the pool specs of cfg's backends.
func backendSpecs(cfg *configv1.Config) []upstream.Spec {
	specs := make([]upstream.Spec, 0, len(cfg.GetBackends()))
	for _, b := range cfg.GetBackends() {
		specs = append(specs, backendSpec(b)) // resilience.go
	}
	return specs
}

// logLevel returns cfg's process log level.
func logLevel(cfg *configv1.Config) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(config.LogLevel(cfg)))
	return l
}
