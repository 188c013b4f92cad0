package daemon

import (
	"context"
	"os"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
)

func handlePing(_ context.Context, _ *Daemon, _ *rpc.Call) rpc.Response {
	return rpc.Result(api.PingResult{Pong: true})
}

// handleShutdown answers first and stops after: the stop closes the
// listener, while this connection stays open until its answer is written.
func handleShutdown(_ context.Context, d *Daemon, _ *rpc.Call) rpc.Response {
	d.log.Info("shutdown requested over the API")
	d.stop()
	return rpc.Result(api.ShutdownResult{PID: os.Getpid()})
}

func version(_ context.Context, d *Daemon) (api.VersionResult, error) {
	return api.VersionResult{Daemon: d.build}, nil
}

func daemonInfo(_ context.Context, d *Daemon) (api.DaemonInfo, error) {
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
	}, nil
}

func configShow(_ context.Context, d *Daemon) (api.ConfigShowResult, error) {
	res := api.ConfigShowResult{File: d.layout.ConfigFile()}
	for _, v := range d.cfg.Values() {
		res.Values = append(res.Values, api.ConfigValue{Key: v.Key, Value: v.Value, Source: v.Source})
	}
	return res, nil
}
