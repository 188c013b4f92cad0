package mcp

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
)

// Sandbox is a sandbox as the tools describe it.
type Sandbox struct {
	Name      string   `json:"name"`
	State     string   `json:"state" jsonschema:"creating, running, stopped, suspended or failed"`
	Image     string   `json:"image"`
	CPUs      int      `json:"cpus"`
	MemoryMiB int      `json:"memory_mib"`
	Egress    string   `json:"egress" jsonschema:"what it may reach: none, sandbox (the host's DNS only), nat (anything) or allow-list"`
	Allow     []string `json:"allow,omitempty" jsonschema:"its allow-list, when egress is allow-list"`
	IP        string   `json:"ip,omitempty"`
	Creator   string   `json:"creator,omitempty"`
	Reason    string   `json:"reason,omitempty" jsonschema:"why it stopped or failed"`
}

func sandboxOf(v api.VM) Sandbox {
	return Sandbox{Name: v.Name, State: v.State, Image: v.Image, CPUs: v.VCPU, MemoryMiB: v.MemoryMiB, Egress: v.Egress,
		Allow: v.Allow, IP: v.IP, Creator: v.Creator, Reason: v.Reason}
}

// CreateIn are sandbox_create's arguments.
type CreateIn struct {
	Image   string `json:"image,omitempty" jsonschema:"OCI image reference, e.g. debian:bookworm or python:3.12 (default: the configured image)"`
	Name    string `json:"name,omitempty" jsonschema:"a name for it (lowercase letters, digits and '-'); generated when empty"`
	CPUs    int    `json:"cpus,omitempty" jsonschema:"virtual CPUs (default: the configured count)"`
	Memory  string `json:"memory,omitempty" jsonschema:"memory, e.g. 512M or 2G (default: the configured size)"`
	Network string `json:"network,omitempty" jsonschema:"none (no network at all), nat (full outbound access) or allow-list (only the hosts in allow); default: the configured policy"`
	// Allow is the allow-list for network allow-list.
	Allow []string `json:"allow,omitempty" jsonschema:"hosts it may reach with network allow-list: domains, *.wildcards, addresses or CIDRs, each with an optional :PORT[,PORT]; or !CIDR to deny one, which opens everything else (the other rules then exceptions)"`
	// FromSandbox and FromCheckpoint start it from a checkpoint of another
	// sandbox of this server, as it was then (image and shape too).
	FromSandbox    string `json:"from_sandbox,omitempty" jsonschema:"with from_checkpoint: the sandbox whose checkpoint to start from"`
	FromCheckpoint string `json:"from_checkpoint,omitempty" jsonschema:"start it from this checkpoint of from_sandbox: memory, processes and disk as they were (image, cpus, memory and network come from it)"`
}

// NameIn names one sandbox.
type NameIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
}

// DeleteIn are sandbox_delete's arguments.
type DeleteIn struct {
	Name    string `json:"name" jsonschema:"the sandbox's name"`
	Confirm bool   `json:"confirm,omitempty" jsonschema:"must be true: deleting a sandbox loses everything in it"`
}

// ListOut is sandbox_list's result.
type ListOut struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

func (s *Server) addSandboxTools() {
	sdk.AddTool(s.srv, &sdk.Tool{
		Name:        "sandbox_create",
		Title:       "Create a sandbox",
		Description: "Create a sandbox: a fresh, isolated Linux microVM from an OCI image, running and ready for sandbox_exec. A warm start when a VM of the same shape was made before.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(false), OpenWorldHint: new(true)},
	}, s.create)
	sdk.AddTool(s.srv, &sdk.Tool{
		Name:        "sandbox_list",
		Title:       "List sandboxes",
		Description: "List this server's sandboxes with their state, image, size and network policy.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
	}, s.list)
	sdk.AddTool(s.srv, &sdk.Tool{
		Name:        "sandbox_info",
		Title:       "Describe a sandbox",
		Description: "Describe one sandbox: state, image, CPUs, memory, network policy, address.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
	}, s.info)
	sdk.AddTool(s.srv, &sdk.Tool{
		Name:        "sandbox_delete",
		Title:       "Delete a sandbox",
		Description: "Delete a sandbox and everything in it (stopped first if it runs). Needs confirm: true.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: false, OpenWorldHint: new(false)},
	}, s.delete)
}

func (s *Server) create(ctx context.Context, req *sdk.CallToolRequest, in CreateIn) (*sdk.CallToolResult, Sandbox, error) {
	if in.FromCheckpoint != "" || in.FromSandbox != "" {
		return s.createFromCheckpoint(ctx, req, in)
	}
	p := api.VMCreateParams{Name: in.Name, Image: in.Image, VCPU: in.CPUs, Creator: s.Creator()}
	if in.CPUs < 0 {
		return nil, Sandbox{}, fmt.Errorf("%w: cpus %d: give a positive count, or leave it out for the default", api.ErrInvalidArgument, in.CPUs)
	}
	if in.Memory != "" {
		n, err := units.ParseSize(in.Memory)
		if err != nil || n < 1<<20 {
			return nil, Sandbox{}, fmt.Errorf("%w: memory %q: give a size such as 512M or 2G", api.ErrInvalidArgument, in.Memory)
		}
		p.MemoryMiB = int(n >> 20)
	}
	switch in.Network {
	case "":
		if len(in.Allow) > 0 {
			p.Allow = in.Allow
		}
	case "none":
		p.Network = api.NetworkNone
	case "nat":
		p.NAT = new(true)
	case "allow-list":
		if len(in.Allow) == 0 {
			return nil, Sandbox{}, fmt.Errorf("%w: network allow-list needs allow: the hosts it may reach (e.g. [\"pypi.org\", \"files.pythonhosted.org\"])", api.ErrInvalidArgument)
		}
		p.Allow = in.Allow
	default:
		return nil, Sandbox{}, fmt.Errorf("%w: network %q: use none, nat or allow-list", api.ErrInvalidArgument, in.Network)
	}
	if len(in.Allow) > 0 && in.Network != "" && in.Network != "allow-list" {
		return nil, Sandbox{}, fmt.Errorf("%w: allow goes with network allow-list, not %s", api.ErrInvalidArgument, in.Network)
	}
	if err := s.withinLimits(ctx, p.MemoryMiB); err != nil {
		return nil, Sandbox{}, err
	}
	op, err := s.d.CreateVM(ctx, p)
	if err != nil {
		return nil, Sandbox{}, err
	}
	step := 0.0
	final, err := s.d.WaitOperation(ctx, op.ID, func(o api.OperationSummary) {
		if o.Phase != "" {
			step++
			progress(ctx, req, step, 0, o.Phase)
		}
	})
	if err != nil {
		return nil, Sandbox{}, fmt.Errorf("waiting for the sandbox: %w", err)
	}
	if final.State != api.OpStateSucceeded {
		msg := final.State
		if final.Error != nil {
			msg = final.Error.Message
		}
		return nil, Sandbox{}, fmt.Errorf("creating the sandbox: %s", msg)
	}
	v, err := s.d.VM(ctx, final.Result)
	if err != nil {
		return nil, Sandbox{}, err
	}
	s.log.Info("sandbox created", "vm", v.Name, "image", v.Image)
	sb := sandboxOf(v)
	return text("sandbox %s is %s (%s, %d CPUs, %d MiB, egress %s)", sb.Name, sb.State, sb.Image, sb.CPUs, sb.MemoryMiB, sb.Egress), sb, nil
}

// createFromCheckpoint starts a new sandbox from another's checkpoint: a
// fork of that checkpoint, one copy, named as asked.
func (s *Server) createFromCheckpoint(ctx context.Context, req *sdk.CallToolRequest, in CreateIn) (*sdk.CallToolResult, Sandbox, error) {
	if in.FromCheckpoint == "" || in.FromSandbox == "" {
		return nil, Sandbox{}, fmt.Errorf("%w: from_sandbox and from_checkpoint go together (checkpoint_list names a sandbox's checkpoints)", api.ErrInvalidArgument)
	}
	if in.Image != "" || in.CPUs != 0 || in.Memory != "" || in.Network != "" || len(in.Allow) > 0 {
		return nil, Sandbox{}, fmt.Errorf("%w: a sandbox from a checkpoint takes its image, cpus, memory and network from it; leave them out", api.ErrInvalidArgument)
	}
	src, err := s.mine(ctx, in.FromSandbox)
	if err != nil {
		return nil, Sandbox{}, err
	}
	if err := s.withinLimits(ctx, src.MemoryMiB); err != nil {
		return nil, Sandbox{}, err
	}
	progress(ctx, req, 0, 1, fmt.Sprintf("starting from checkpoint %s of %s", in.FromCheckpoint, in.FromSandbox))
	r, err := s.d.ForkVM(ctx, api.VMForkParams{Name: in.FromSandbox, Count: 1, Prefix: in.Name, Checkpoint: in.FromCheckpoint})
	if err != nil {
		return nil, Sandbox{}, err
	}
	if len(r.VMs) != 1 {
		return nil, Sandbox{}, fmt.Errorf("starting from checkpoint %s: no sandbox came of it", in.FromCheckpoint)
	}
	progress(ctx, req, 1, 1, "running")
	sb := sandboxOf(r.VMs[0])
	s.log.Info("sandbox created from a checkpoint", "vm", sb.Name, "from", in.FromSandbox, "checkpoint", in.FromCheckpoint)
	return text("sandbox %s is %s, from checkpoint %s of %s", sb.Name, sb.State, in.FromCheckpoint, in.FromSandbox), sb, nil
}

// withinLimits refuses a create that would pass the server's limits.
func (s *Server) withinLimits(ctx context.Context, memoryMiB int) error {
	return s.withinLimitsN(ctx, 1, memoryMiB)
}

// withinLimitsN refuses n more sandboxes of memoryMiB each (0: the
// daemon's default) that would pass the server's limits.
func (s *Server) withinLimitsN(ctx context.Context, count, memoryMiB int) error {
	if s.o.MaxSandboxes == 0 && s.o.MaxMemoryMiB == 0 {
		return nil
	}
	all, err := s.d.VMs(ctx)
	if err != nil {
		return err
	}
	n, mem := 0, 0
	for _, v := range all {
		if v.Creator == s.Creator() {
			n++
			mem += v.MemoryMiB
		}
	}
	if s.o.MaxSandboxes > 0 && n+count > s.o.MaxSandboxes {
		return fmt.Errorf("%w: this server may keep %d sandboxes (--max-sandboxes) and has %d; %d more would pass it; delete some first", api.ErrLimitExceeded, s.o.MaxSandboxes, n, count)
	}
	if s.o.MaxMemoryMiB > 0 {
		if memoryMiB == 0 {
			if memoryMiB, err = s.defaultMemory(ctx); err != nil {
				return err
			}
		}
		if mem+count*memoryMiB > s.o.MaxMemoryMiB {
			return fmt.Errorf("%w: this server's sandboxes may have %d MiB of memory in all (--max-memory); they have %d and %d more would take %d; delete some or ask less",
				api.ErrLimitExceeded, s.o.MaxMemoryMiB, mem, count, count*memoryMiB)
		}
	}
	return nil
}

// defaultMemory is the memory the daemon gives a VM that asks none.
func (s *Server) defaultMemory(ctx context.Context) (int, error) {
	cfg, err := s.d.ConfigShow(ctx)
	if err != nil {
		return 0, err
	}
	for _, v := range cfg.Values {
		if v.Key == "vm_defaults.memory_mib" {
			return strconv.Atoi(v.Value)
		}
	}
	return 0, fmt.Errorf("reading the daemon's default memory: vm_defaults.memory_mib is not in its config")
}

func (s *Server) list(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, ListOut, error) {
	vms, err := s.visible(ctx)
	if err != nil {
		return nil, ListOut{}, err
	}
	out := ListOut{Sandboxes: []Sandbox{}}
	var lines []string
	for _, v := range vms {
		out.Sandboxes = append(out.Sandboxes, sandboxOf(v))
		lines = append(lines, fmt.Sprintf("%s %s %s", v.Name, v.State, v.Image))
	}
	if len(lines) == 0 {
		return text("no sandboxes (sandbox_create makes one)"), out, nil
	}
	return text("%d sandboxes:\n%s", len(lines), strings.Join(lines, "\n")), out, nil
}

func (s *Server) info(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, Sandbox, error) {
	v, err := s.mine(ctx, in.Name)
	if err != nil {
		return nil, Sandbox{}, err
	}
	sb := sandboxOf(v)
	return text("sandbox %s is %s (%s, %d CPUs, %d MiB, egress %s)", sb.Name, sb.State, sb.Image, sb.CPUs, sb.MemoryMiB, sb.Egress), sb, nil
}

func (s *Server) delete(ctx context.Context, _ *sdk.CallToolRequest, in DeleteIn) (*sdk.CallToolResult, Sandbox, error) {
	if !in.Confirm {
		return nil, Sandbox{}, fmt.Errorf("%w: sandbox_delete loses everything in sandbox %s; call it again with confirm: true if that is meant", api.ErrInvalidArgument, in.Name)
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, Sandbox{}, err
	}
	v, err := s.d.DeleteVM(ctx, api.VMDeleteParams{Name: in.Name, Force: true})
	if err != nil {
		return nil, Sandbox{}, err
	}
	s.log.Info("sandbox deleted", "vm", v.Name)
	return text("sandbox %s deleted", v.Name), sandboxOf(v), nil
}
