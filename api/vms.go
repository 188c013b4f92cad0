package api

// BootTestParams are the params of MethodVMBootTest.
type BootTestParams struct {
	Image  string `json:"image"`            // name or ID prefix
	Kernel string `json:"kernel,omitempty"` // default: the configured default kernel
}

// BootTestResult answers MethodVMBootTest.
type BootTestResult struct {
	VMM    string  `json:"vmm"`
	Accel  string  `json:"accel,omitempty"`
	Kernel string  `json:"kernel"`
	Image  string  `json:"image"`
	Uname  string  `json:"uname"`
	Phases []Phase `json:"phases"`
}

// Phase is one timed step of a boot.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Clock says whose clock measured it: "host" (wall time since the VMM
	// started) or "guest" (uptime).
	Clock string `json:"clock"`
}
