package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// Each sandbox's console and egress log are resources, for a client that
// attaches them to a model's context rather than calling a tool.
const (
	consoleURI = "banger://sandbox/{name}/console"
	egressURI  = "banger://sandbox/{name}/egress"
	// consoleTail bounds a console read: its last lines.
	consoleTail = 2000
)

func (s *Server) addResources() {
	s.srv.AddResourceTemplate(&sdk.ResourceTemplate{
		Name: "console", Title: "A sandbox's console", URITemplate: consoleURI, MIMEType: "text/plain",
		Description: fmt.Sprintf("The serial console of a sandbox: the kernel's and banger's agent's messages (the last %d lines).", consoleTail),
	}, s.readResource)
	s.srv.AddResourceTemplate(&sdk.ResourceTemplate{
		Name: "egress", Title: "What a sandbox tried to reach", URITemplate: egressURI, MIMEType: "application/jsonl",
		Description: "A sandbox's egress log, one JSON object a line: DNS questions and connections, allowed or denied, and why.",
	}, s.readResource)
}

// sandboxResource splits a resource URI into its sandbox and what of it.
func sandboxResource(uri string) (name, what string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "banger://sandbox/")
	if !ok {
		return "", "", false
	}
	name, what, ok = strings.Cut(rest, "/")
	return name, what, ok && name != "" && (what == "console" || what == "egress")
}

func (s *Server) readResource(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	name, what, ok := sandboxResource(uri)
	if !ok {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	if _, err := s.mine(ctx, name); err != nil {
		return nil, err
	}
	var text strings.Builder
	mime := "text/plain"
	switch what {
	case "console":
		var console strings.Builder
		r, err := s.d.VMLogs(ctx, api.VMLogsParams{Name: name, Tail: consoleTail}, func(chunk string) error {
			console.WriteString(chunk)
			return nil
		})
		if err != nil {
			return nil, err
		}
		console.WriteString(r.Console)
		text.WriteString(strings.ToValidUTF8(console.String(), "\uFFFD"))
	case "egress":
		mime = "application/jsonl"
		enc := json.NewEncoder(&text)
		if err := s.d.VMEgress(ctx, api.VMEgressParams{Name: name}, func(e api.EgressEvent) error { return enc.Encode(e) }); err != nil {
			return nil, err
		}
	}
	return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, MIMEType: mime, Text: text.String()}}}, nil
}
