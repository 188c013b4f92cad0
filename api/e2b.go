package api

import "time"

// E2BStatus answers MethodE2BStatus.
type E2BStatus struct {
	Enabled     bool   `json:"enabled"`
	Configured  string `json:"configured,omitempty"` // e2b.listen
	Listen      string `json:"listen,omitempty"`     // where it listens, once it does
	Domain      string `json:"domain"`
	EnvdVersion string `json:"envd_version"`
	Sandboxes   int    `json:"sandboxes"`
	Keys        int    `json:"keys"`
	Templates   int    `json:"templates"`
	// Error is why it does not listen, when it was asked to.
	Error string `json:"error,omitempty"`
}

// E2BKey is an API key of the E2B API, as kept (its secret only hashed).
type E2BKey struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Limits of what the key's sandboxes may hold at once (0: none).
	MaxSandboxes int `json:"max_sandboxes,omitempty"`
	MaxMemoryMiB int `json:"max_memory_mib,omitempty"`
}

// E2BKeyCreateParams are the params of MethodE2BKeyCreate. Name labels
// the key's sandboxes in `banger ps` (creator e2b:NAME): lowercase
// letters, digits, '.', '_' and '-', at most 63.
type E2BKeyCreateParams struct {
	Name         string `json:"name"`
	MaxSandboxes int    `json:"max_sandboxes,omitempty"`
	MaxMemoryMiB int    `json:"max_memory_mib,omitempty"`
}

// E2BKeyCreateResult answers MethodE2BKeyCreate; Secret is shown once.
type E2BKeyCreateResult struct {
	Key    E2BKey `json:"key"`
	Secret string `json:"secret"`
}

// E2BKeyListResult answers MethodE2BKeyList.
type E2BKeyListResult struct {
	Keys []E2BKey `json:"keys"`
}

// E2BKeyRevokeParams name a key by its ID (or a prefix naming one).
type E2BKeyRevokeParams struct {
	ID string `json:"id"`
}

// E2BTemplate maps an E2B template name to an image and a shape.
type E2BTemplate struct {
	Name      string `json:"name"`
	Image     string `json:"image"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskSize  int64  `json:"disk_size,omitempty"`
}

// E2BTemplateListResult answers MethodE2BTemplateList.
type E2BTemplateListResult struct {
	Templates []E2BTemplate `json:"templates"`
}

// E2BTemplateDeleteParams name a template mapping.
type E2BTemplateDeleteParams struct {
	Name string `json:"name"`
}
