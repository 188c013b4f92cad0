package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// The tools on a sandbox's state beyond its life: ports, egress,
// checkpoints and fork.

// Port is a listening port of a sandbox.
type Port struct {
	Port    int    `json:"port"`
	Proto   string `json:"proto" jsonschema:"tcp or udp"`
	Label   string `json:"label" jsonschema:"what answered a probe from the host: http, https or tcp (udp for UDP)"`
	Process string `json:"process,omitempty"`
	URL     string `json:"url,omitempty" jsonschema:"where the host reaches it, when it can"`
}

// PortsOut is ports_list's result.
type PortsOut struct {
	Ports []Port `json:"ports"`
}

// ForwardIn are port_forward's arguments.
type ForwardIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	Port int    `json:"port" jsonschema:"the guest's TCP port"`
}

// ForwardOut is port_forward's result.
type ForwardOut struct {
	Port int    `json:"port"`
	URL  string `json:"url" jsonschema:"the host's URL for it (a loopback forward)"`
}

// EgressOut is egress_log's result.
type EgressOut struct {
	Events []api.EgressEvent `json:"events" jsonschema:"what the sandbox tried to reach, oldest first"`
}

// SuggestOut is egress_suggest's result.
type SuggestOut struct {
	Allow []string `json:"allow" jsonschema:"the allow-list that would have let every attempt through"`
	Never []string `json:"never,omitempty" jsonschema:"what no allow-list opens, and why"`
}

// AllowIn are egress_allow's arguments.
type AllowIn struct {
	Name  string   `json:"name" jsonschema:"the sandbox's name"`
	Allow []string `json:"allow" jsonschema:"the whole new allow-list: domains, *.wildcards, addresses or CIDRs, each with an optional :PORT[,PORT]"`
}

// CheckpointIn names a checkpoint.
type CheckpointIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	Tag  string `json:"tag,omitempty" jsonschema:"the checkpoint's tag (default on create: the time)"`
}

// Checkpoint is a saved state of a sandbox: memory, devices and disk.
type Checkpoint struct {
	Tag        string `json:"tag"`
	Created    string `json:"created"`
	StateBytes int64  `json:"state_bytes"`
}

// CheckpointsOut is checkpoint_list's result.
type CheckpointsOut struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// ForkIn are sandbox_fork's arguments.
type ForkIn struct {
	Name   string `json:"name" jsonschema:"the sandbox to copy (it runs on)"`
	Count  int    `json:"count,omitempty" jsonschema:"how many copies (default 1, at most 16)"`
	Prefix string `json:"prefix,omitempty" jsonschema:"names the copies PREFIX-1..N (default NAME-fork-N)"`
}

// ForkCopy is one copy of a fork: its name, or its own error.
type ForkCopy struct {
	Name  string `json:"name"`
	State string `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}

// ForkOut is sandbox_fork's result: one entry a copy.
type ForkOut struct {
	Copies []ForkCopy `json:"copies"`
}

func (s *Server) addStateTools() {
	readOnly := &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)}
	sdk.AddTool(s.srv, &sdk.Tool{Name: "ports_list", Title: "List a sandbox's ports",
		Description: "The ports a sandbox listens on, each labelled http, https or tcp by a probe from the host, with the URL that reaches it.",
		Annotations: readOnly}, s.ports)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "port_forward", Title: "Forward a sandbox's port",
		Description: "Forward a sandbox's TCP port to the host's loopback and return its URL (for a browser or curl on the host).",
		Annotations: &sdk.ToolAnnotations{IdempotentHint: true, DestructiveHint: new(false), OpenWorldHint: new(false)}}, s.forward)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "egress_log", Title: "What a sandbox tried to reach",
		Description: "Every outbound attempt of a sandbox as the host saw it: DNS questions and new connections, allowed or denied, with why.",
		Annotations: readOnly}, s.egressLog)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "egress_suggest", Title: "Suggest an allow-list",
		Description: "The allow-list that would have let through everything the sandbox tried: what egress_allow would need.",
		Annotations: readOnly}, s.egressSuggest)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "egress_allow", Title: "Change a sandbox's allow-list",
		Description: "Replace a sandbox's allow-list, at once. A person must say yes: the client asks them (MCP elicitation); a client that cannot ask is refused unless the server was started with --allow-egress-changes.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(true)}}, s.egressAllow)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "checkpoint_create", Title: "Checkpoint a sandbox",
		Description: "Save a running sandbox's whole state (memory, processes, disk) under a tag; checkpoint_restore brings it back exactly.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(false), OpenWorldHint: new(false)}}, s.checkpoint)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "checkpoint_list", Title: "List a sandbox's checkpoints",
		Description: "A sandbox's checkpoints, newest last.", Annotations: readOnly}, s.checkpoints)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "checkpoint_restore", Title: "Roll a sandbox back",
		Description: "Put a sandbox back to a checkpoint: what happened since is lost, processes included.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)}}, s.restore)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "sandbox_fork", Title: "Fork a sandbox",
		Description: "Copy a running sandbox into N running sandboxes, each with its memory, processes and disk as they were: try N approaches at once. One result per copy: a name, or its own error.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(false), OpenWorldHint: new(false)}}, s.fork)
}

func (s *Server) ports(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, PortsOut, error) {
	return s.portsOf(ctx, in.Name, false)
}

func (s *Server) portsOf(ctx context.Context, name string, forward bool) (*sdk.CallToolResult, PortsOut, error) {
	if _, err := s.mine(ctx, name); err != nil {
		return nil, PortsOut{}, err
	}
	r, err := s.d.VMPorts(ctx, api.VMPortsParams{Name: name, Forward: forward})
	if err != nil {
		return nil, PortsOut{}, err
	}
	out := PortsOut{Ports: []Port{}}
	var lines []string
	for _, p := range r.Ports {
		out.Ports = append(out.Ports, Port{Port: p.Port, Proto: p.Proto, Label: p.Scheme, Process: p.Process, URL: p.URL})
		lines = append(lines, fmt.Sprintf("%d/%s %s %s %s", p.Port, p.Proto, p.Scheme, p.Process, p.URL))
	}
	return text("%d ports:\n%s", len(lines), strings.Join(lines, "\n")), out, nil
}

func (s *Server) forward(ctx context.Context, _ *sdk.CallToolRequest, in ForwardIn) (*sdk.CallToolResult, ForwardOut, error) {
	if in.Port < 1 || in.Port > 65535 {
		return nil, ForwardOut{}, fmt.Errorf("%w: port %d: give 1 to 65535", api.ErrInvalidArgument, in.Port)
	}
	_, ports, err := s.portsOf(ctx, in.Name, true)
	if err != nil {
		return nil, ForwardOut{}, err
	}
	for _, p := range ports.Ports {
		if p.Port == in.Port && p.Proto == "tcp" && p.URL != "" {
			return text("port %d of %s is at %s", p.Port, in.Name, p.URL), ForwardOut{Port: p.Port, URL: p.URL}, nil
		}
	}
	return nil, ForwardOut{}, fmt.Errorf("%w: nothing listens on TCP port %d in sandbox %s (ports_list shows what does)", api.ErrNotFound, in.Port, in.Name)
}

func (s *Server) egressLog(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, EgressOut, error) {
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, EgressOut{}, err
	}
	out := EgressOut{Events: []api.EgressEvent{}}
	const most = 1000 // the newest, for a model's context
	err := s.d.VMEgress(ctx, api.VMEgressParams{Name: in.Name}, func(e api.EgressEvent) error {
		out.Events = append(out.Events, e)
		if len(out.Events) > most {
			out.Events = out.Events[1:]
		}
		return nil
	})
	if err != nil {
		return nil, EgressOut{}, err
	}
	denied := 0
	for _, e := range out.Events {
		if e.Verdict == api.EgressDenied {
			denied++
		}
	}
	return text("%d attempts, %d denied (egress_suggest says what would allow them)", len(out.Events), denied), out, nil
}

func (s *Server) egressSuggest(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, SuggestOut, error) {
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, SuggestOut{}, err
	}
	r, err := s.d.VMEgressSuggest(ctx, in.Name)
	if err != nil {
		return nil, SuggestOut{}, err
	}
	out := SuggestOut{Allow: r.Allow, Never: r.Never}
	if out.Allow == nil {
		out.Allow = []string{}
	}
	return text("allow: %s", strings.Join(out.Allow, " ")), out, nil
}

// egressAllow changes the list only with a person's yes: asked through
// the client (MCP elicitation, as a multi round-trip request: the call
// comes back with the answer), or given ahead by --allow-egress-changes.
// A model must not widen its own sandbox's way out by itself.
func (s *Server) egressAllow(ctx context.Context, req *sdk.CallToolRequest, in AllowIn) (*sdk.CallToolResult, Sandbox, error) {
	if len(in.Allow) == 0 {
		return nil, Sandbox{}, fmt.Errorf("%w: allow is empty: give the whole new list (egress_suggest proposes one)", api.ErrInvalidArgument)
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, Sandbox{}, err
	}
	if !s.o.AllowEgressChanges {
		question := fmt.Sprintf("Let sandbox %s reach only: %s?", in.Name, strings.Join(in.Allow, ", "))
		ask, err := askPerson(req, question)
		if err != nil || ask != nil {
			return ask, Sandbox{}, err
		}
	}
	v, err := s.d.SetVM(ctx, api.VMSetParams{Name: in.Name, Allow: in.Allow})
	if err != nil {
		return nil, Sandbox{}, err
	}
	s.log.Info("egress changed", "vm", in.Name, "allow", in.Allow)
	sb := sandboxOf(v)
	return text("sandbox %s may now reach: %s", sb.Name, strings.Join(sb.Allow, ", ")), sb, nil
}

// askPerson asks the client's user the question. The first call returns
// the request to put to them; the client calls again with the answer and
// the state, which binds the answer to this very question (an answer to
// another list does not pass). nil, nil is a yes.
func askPerson(req *sdk.CallToolRequest, question string) (*sdk.CallToolResult, error) {
	sum := sha256.Sum256([]byte(question))
	state := hex.EncodeToString(sum[:])
	if req == nil || req.Params == nil {
		return nil, fmt.Errorf("%w: changing a sandbox's egress needs a person's yes", api.ErrPermissionDenied)
	}
	if answer, ok := req.Params.InputResponses["approve"]; ok {
		res, isElicit := answer.(*sdk.ElicitResult)
		switch {
		case req.Params.RequestState != state:
			return nil, fmt.Errorf("%w: the answer given is not to this question", api.ErrPermissionDenied)
		case !isElicit || res.Action != "accept" || res.Content["approve"] != true:
			action := "no answer"
			if isElicit {
				action = res.Action
			}
			return nil, fmt.Errorf("%w: the person said no (%s); the allow-list is unchanged", api.ErrPermissionDenied, action)
		}
		return nil, nil
	}
	// A client known not to ask people cannot be asked.
	if req.Session != nil {
		if p := req.Session.InitializeParams(); p != nil && p.Capabilities != nil && p.Capabilities.Elicitation == nil && p.ProtocolVersion != "" {
			return nil, fmt.Errorf("%w: changing a sandbox's egress needs a person's yes: this client cannot ask one (MCP elicitation), and the server was not started with --allow-egress-changes", api.ErrPermissionDenied)
		}
	}
	return &sdk.CallToolResult{
		InputRequests: sdk.InputRequestMap{"approve": &sdk.ElicitParams{
			Message: question,
			RequestedSchema: &jsonschema.Schema{Type: "object", Required: []string{"approve"}, Properties: map[string]*jsonschema.Schema{
				"approve": {Type: "boolean", Title: "Allow", Description: "yes: change the sandbox's allow-list"},
			}},
		}},
		RequestState: state,
	}, nil
}

func (s *Server) checkpoint(ctx context.Context, _ *sdk.CallToolRequest, in CheckpointIn) (*sdk.CallToolResult, Checkpoint, error) {
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, Checkpoint{}, err
	}
	sn, err := s.d.CreateSnapshot(ctx, api.VMSnapshotParams{Name: in.Name, Tag: in.Tag})
	if err != nil {
		return nil, Checkpoint{}, err
	}
	c := checkpointOf(sn)
	return text("checkpoint %s of %s saved (%d bytes of memory)", c.Tag, in.Name, c.StateBytes), c, nil
}

func checkpointOf(sn api.Snapshot) Checkpoint {
	return Checkpoint{Tag: sn.Tag, Created: sn.Created.UTC().Format("2006-01-02T15:04:05Z"), StateBytes: sn.StateBytes}
}

func (s *Server) checkpoints(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, CheckpointsOut, error) {
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, CheckpointsOut{}, err
	}
	r, err := s.d.ListSnapshots(ctx, in.Name)
	if err != nil {
		return nil, CheckpointsOut{}, err
	}
	out := CheckpointsOut{Checkpoints: []Checkpoint{}}
	var tags []string
	for _, sn := range r.Snapshots {
		out.Checkpoints = append(out.Checkpoints, checkpointOf(sn))
		tags = append(tags, sn.Tag)
	}
	return text("%d checkpoints: %s", len(tags), strings.Join(tags, " ")), out, nil
}

func (s *Server) restore(ctx context.Context, _ *sdk.CallToolRequest, in CheckpointIn) (*sdk.CallToolResult, Sandbox, error) {
	if in.Tag == "" {
		return nil, Sandbox{}, fmt.Errorf("%w: tag is required: the checkpoint to go back to (checkpoint_list names them)", api.ErrInvalidArgument)
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, Sandbox{}, err
	}
	v, err := s.d.RestoreSnapshot(ctx, api.VMSnapshotParams{Name: in.Name, Tag: in.Tag})
	if err != nil {
		return nil, Sandbox{}, err
	}
	return text("sandbox %s is back at checkpoint %s", v.Name, in.Tag), sandboxOf(v), nil
}

func (s *Server) fork(ctx context.Context, req *sdk.CallToolRequest, in ForkIn) (*sdk.CallToolResult, ForkOut, error) {
	src, err := s.mine(ctx, in.Name)
	if err != nil {
		return nil, ForkOut{}, err
	}
	count := max(in.Count, 1)
	if err := s.withinLimitsN(ctx, count, src.MemoryMiB); err != nil {
		return nil, ForkOut{}, err
	}
	progress(ctx, req, 0, 1, fmt.Sprintf("forking %s into %d", in.Name, count))
	r, err := s.d.ForkVM(ctx, api.VMForkParams{Name: in.Name, Count: in.Count, Prefix: in.Prefix, Partial: true})
	if err != nil {
		return nil, ForkOut{}, err
	}
	progress(ctx, req, 1, 1, "forked")
	out := ForkOut{Copies: []ForkCopy{}}
	var lines []string
	for _, v := range r.VMs {
		out.Copies = append(out.Copies, ForkCopy{Name: v.Name, State: v.State})
		lines = append(lines, v.Name+" "+v.State)
	}
	for _, f := range r.Failed {
		out.Copies = append(out.Copies, ForkCopy{Name: f.Name, Error: f.Error})
		lines = append(lines, f.Name+" failed: "+f.Error)
	}
	s.log.Info("sandbox forked", "vm", in.Name, "copies", len(r.VMs), "failed", len(r.Failed))
	return text("%d of %d copies run:\n%s", len(r.VMs), count, strings.Join(lines, "\n")), out, nil
}
