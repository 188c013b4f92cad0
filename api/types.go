package api

import (
	"strings"
	"time"
)

// PingResult answers MethodPing.
type PingResult struct {
	Pong bool `json:"pong"`
}

// BuildInfo describes one binary.
type BuildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Date     string `json:"date,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Protocol int    `json:"protocol"`
}

// VersionResult answers MethodVersion with the daemon's build.
type VersionResult struct {
	Daemon BuildInfo `json:"daemon"`
}

// Paths is where a daemon keeps everything.
type Paths struct {
	Home       string `json:"home,omitempty"`
	ConfigFile string `json:"config_file"`
	StateDir   string `json:"state_dir"`
	CacheDir   string `json:"cache_dir"`
	RuntimeDir string `json:"runtime_dir"`
	LogDir     string `json:"log_dir"`
	LogFile    string `json:"log_file"`
	Socket     string `json:"socket"`
	Database   string `json:"database"`
}

// DaemonInfo answers MethodDaemonInfo.
type DaemonInfo struct {
	PID           int       `json:"pid"`
	Mode          string    `json:"mode"` // user, system or home
	Paths         Paths     `json:"paths"`
	Build         BuildInfo `json:"build"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	SchemaVersion int       `json:"schema_version"`
	InstanceID    string    `json:"instance_id"`
	// Resources is what the daemon holds now: the reliability soak
	// compares them before and after many requests.
	Resources DaemonResources `json:"resources"`
}

// DaemonResources is the daemon process's own use.
type DaemonResources struct {
	Goroutines int   `json:"goroutines"`
	OpenFiles  int   `json:"open_files"`
	RSSBytes   int64 `json:"rss_bytes"`
}

// ConfigValue is one effective configuration value and where it came from.
type ConfigValue struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source string `json:"source"` // "default", "host", or the config file's path
}

// ConfigShowResult answers MethodConfigShow.
type ConfigShowResult struct {
	File   string        `json:"file"`
	Values []ConfigValue `json:"values"`
}

// Operation states.
const (
	OpStateRunning   = "running"
	OpStateSucceeded = "succeeded"
	OpStateFailed    = "failed"
	OpStateCanceled  = "canceled"
)

// OperationProgress is a counter for the current phase (bytes, layers, …).
type OperationProgress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total,omitempty"` // 0 when unknown
	Unit  string `json:"unit,omitempty"`  // "bytes", "layers", …
	// Items break the work down, e.g. one per layer of a pull.
	Items []ProgressItem `json:"items,omitempty"`
}

// ProgressItem is one part of an operation's current work.
type ProgressItem struct {
	Name  string `json:"name"`
	Done  int64  `json:"done"`
	Total int64  `json:"total,omitempty"`
}

// OperationSummary is the public shape of one operation.
type OperationSummary struct {
	ID string `json:"id"`
	// Result names what a successful operation produced (an image name).
	Result     string             `json:"result,omitempty"`
	Kind       string             `json:"kind"`
	Target     string             `json:"target,omitempty"`
	State      string             `json:"state"`
	Phase      string             `json:"phase,omitempty"`
	Progress   *OperationProgress `json:"progress,omitempty"`
	Done       bool               `json:"done"`
	Error      *Error             `json:"error,omitempty"`
	StartedAt  time.Time          `json:"started_at"`
	FinishedAt *time.Time         `json:"finished_at,omitempty"`
}

// OperationsListResult answers MethodOperationsList. Finished operations
// stay listed until they are pruned after the retention period.
type OperationsListResult struct {
	Operations []OperationSummary `json:"operations"`
}

// OperationIDParams names one operation (get, cancel, wait).
type OperationIDParams struct {
	ID string `json:"id"`
}

// ShutdownResult answers MethodShutdown.
type ShutdownResult struct {
	PID int `json:"pid"`
}

// ShortID is the part of an ID (a sha256 digest) shown to users: its
// first 12 hex digits.
func ShortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	return h[:min(12, len(h))]
}
