package daemon

import (
	"context"
	"os"
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
	}, nil
}

func (d *Daemon) configShow(context.Context) (api.ConfigShowResult, error) {
	res := api.ConfigShowResult{File: d.layout.ConfigFile()}
	for _, v := range d.cfg.Values() {
		res.Values = append(res.Values, api.ConfigValue{Key: v.Key, Value: v.Value, Source: v.Source})
	}
	return res, nil
}
