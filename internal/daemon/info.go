package daemon

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
)

// The daemon's own methods.

func ping(context.Context) (api.PingResult, error) { return api.PingResult{Pong: true}, nil }

// shutdown answers first and stops after: the stop closes the listener,
// while this connection stays open until its answer is written.
func (d *Daemon) shutdown(context.Context) (api.ShutdownResult, error) {
	d.log.Info("shutdown requested over the API")
	d.stop()
	return api.ShutdownResult{PID: os.Getpid()}, nil
}

func (d *Daemon) version(context.Context) (api.VersionResult, error) {
	return api.VersionResult{Daemon: d.build}, nil
}

func (d *Daemon) info(context.Context) (api.DaemonInfo, error) {
	l := d.layout
	return api.DaemonInfo{
		PID:  os.Getpid(),
		Mode: string(l.Mode),
		Paths: api.Paths{
			Home: l.Home, ConfigFile: l.ConfigFile(), StateDir: l.StateDir, CacheDir: l.CacheDir,
			RuntimeDir: l.RuntimeDir, LogDir: l.LogDir, LogFile: l.LogFile(), Socket: l.Socket(),
			Database: l.Database(),
		},
		Build:         d.build,
		StartedAt:     d.started,
		UptimeSeconds: time.Since(d.started).Seconds(),
		SchemaVersion: d.store.SchemaVersion(),
		InstanceID:    d.instanceID,
		Resources:     resources(),
	}, nil
}

// resources reads the daemon's goroutines, open descriptors and resident
// memory; a figure it cannot read stays 0.
func resources() api.DaemonResources {
	r := api.DaemonResources{Goroutines: runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.OpenFiles = len(fds) - 1 // less the one ReadDir held open
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			r.RSSBytes = pages * int64(os.Getpagesize())
		}
	}
	return r
}

func (d *Daemon) configShow(context.Context) (api.ConfigShowResult, error) {
	res := api.ConfigShowResult{File: d.layout.ConfigFile()}
	for _, v := range d.cfg.Values() {
		res.Values = append(res.Values, api.ConfigValue{Key: v.Key, Value: v.Value, Source: v.Source})
	}
	return res, nil
}
