package upstream

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/stats"
)

// recorder is a stats handler that notes what it sees under its name.
type recorder struct {
	name string
	log  *[]string
}

type tagKey string

func (r recorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	prev, _ := ctx.Value(tagKey("tags")).(string)
	*r.log = append(*r.log, "tag "+r.name+" after ["+prev+"]")
	return context.WithValue(ctx, tagKey("tags"), prev+r.name)
}

func (r recorder) HandleRPC(ctx context.Context, s stats.RPCStats) {
	tags, _ := ctx.Value(tagKey("tags")).(string)
	*r.log = append(*r.log, "rpc "+r.name+" sees ["+tags+"]")
}

func (r recorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	*r.log = append(*r.log, "conn "+r.name)
	return ctx
}

func (r recorder) HandleConn(context.Context, stats.ConnStats) {
	*r.log = append(*r.log, "connstats "+r.name)
}

// The pool's stats handler runs the attempt tracker and the added handlers
// as one, in order, each TagRPC on the context of the one before.
func TestStatsChain(t *testing.T) {
	var log []string
	p := &Pool{opts: defaultOptions()}
	for _, o := range []Option{WithStatsHandler(recorder{"a", &log}), WithStatsHandler(recorder{"b", &log})} {
		o.apply(&p.opts)
	}
	h := p.statsHandler()
	ctx := h.TagRPC(context.Background(), &stats.RPCTagInfo{})
	h.HandleRPC(ctx, &stats.Begin{})
	h.HandleConn(h.TagConn(context.Background(), &stats.ConnTagInfo{}), &stats.ConnBegin{})
	want := "tag a after []|tag b after [a]|rpc a sees [ab]|rpc b sees [ab]|conn a|conn b|connstats a|connstats b"
	if got := strings.Join(log, "|"); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if _, ok := (&Pool{opts: defaultOptions()}).statsHandler().(attemptTracker); !ok {
		t.Error("without added handlers the pool's handler is the attempt tracker alone")
	}
}
