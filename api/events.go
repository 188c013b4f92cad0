package api

import "time"

// MethodEvents streams the daemon's lifecycle events: those kept since
// Since first, then, with Follow, each new one as it happens.
const MethodEvents = "events"

// Event types.
const (
	EventVMCreated       = "vm.created"
	EventVMStarted       = "vm.started"
	EventVMStopped       = "vm.stopped" // Reason says why: auto-stop, power-off, a VMM crash, a user
	EventVMDeleted       = "vm.deleted"
	EventVMSuspended     = "vm.suspended"
	EventVMResumed       = "vm.resumed"
	EventImagePulled     = "image.pulled"
	EventImageImported   = "image.imported"
	EventImageDeleted    = "image.deleted"
	EventOperationFailed = "operation.failed" // Detail is the operation's kind and ID
	EventEgressDenied    = "egress.denied"    // Detail is where the VM tried to go
)

// EventTypes are the types an events call may filter on.
var EventTypes = []string{EventVMCreated, EventVMStarted, EventVMStopped, EventVMDeleted, EventVMSuspended, EventVMResumed,
	EventImagePulled, EventImageImported, EventImageDeleted, EventOperationFailed, EventEgressDenied}

// Event is one thing that happened, as the daemon saw it. IDs grow with
// time and survive daemon restarts: a client that saw ID n has seen
// every earlier event it asked for.
type Event struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	VM     string    `json:"vm,omitempty"`
	Image  string    `json:"image,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// EventsParams selects events. A zero Since sends no past events.
type EventsParams struct {
	Since  time.Time `json:"since,omitzero"`
	VM     string    `json:"vm,omitempty"`
	Types  []string  `json:"types,omitempty"`
	Follow bool      `json:"follow,omitempty"`
}

// EventsResult ends an events stream: how many events were sent.
type EventsResult struct {
	Count int `json:"count"`
}
