package edge

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher watches the config file for changes.
//
// It watches the file's directory, not the file: an editor's or a deploy
// tool's atomic replace (write a temporary file, rename it over the config)
// and a Kubernetes ConfigMap update (a new timestamped directory, then the
// "..data" symlink renamed over the old one) replace the directory entry,
// which a watch on the file itself would lose. Any event in the directory
// but a change of mode (re)starts a quiet timer; when the timer fires the
// file is read, through symlinks, and reloaded only if its content hash
// differs from the content last read.
type watcher struct {
	fs   *fsnotify.Watcher
	stop context.CancelFunc
	done chan struct{} // closed when run returns
}

// startWatch starts watching the config file, if there is one and watching
// is on. A watch that cannot start is logged: reloads through the admin API
// and ReloadFile still work.
func (g *Gateway) startWatch() {
	path := g.opts.configFile
	if path == "" || g.opts.watchDebounce < 0 {
		return
	}
	// The content in force: only a change from it reloads.
	if data, err := os.ReadFile(path); err == nil {
		g.reload.mu.Lock()
		if !g.reload.hashKnown {
			g.reload.fileHash, g.reload.hashKnown = sha256.Sum256(data), true
		}
		g.reload.mu.Unlock()
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		g.log.Warn("cannot watch the config file; reload it with SIGHUP or the admin API", "source", path, "error", err)
		return
	}
	dir := filepath.Dir(path)
	if err := fw.Add(dir); err != nil {
		_ = fw.Close()
		g.log.Warn("cannot watch the config file; reload it with SIGHUP or the admin API", "source", path, "error", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{fs: fw, stop: cancel, done: make(chan struct{})}
	g.watch = w
	go g.runWatch(ctx, w)
	g.log.Info("watching the config file", "source", path, "debounce", g.opts.watchDebounce.String())
}

// stopWatch stops the watcher and waits for it.
func (g *Gateway) stopWatch() {
	w := g.watch
	if w == nil {
		return
	}
	w.stop()
	<-w.done
	_ = w.fs.Close()
}

// runWatch debounces the directory's events into reloads until ctx ends.
func (g *Gateway) runWatch(ctx context.Context, w *watcher) {
	defer close(w.done)
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			quiet.Reset(g.opts.watchDebounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			g.log.Warn("config file watch", "source", g.opts.configFile, "error", err)
		case <-quiet.C:
			g.reloadIfChanged(ctx)
		}
	}
}
