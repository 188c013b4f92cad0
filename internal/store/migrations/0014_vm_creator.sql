-- creator: who asked for the VM when it was not a person at the CLI: an
-- MCP server ("mcp:NAME"), whose tools see only the VMs it created. ''
-- for a person (and for every VM made before).
ALTER TABLE vms ADD COLUMN creator TEXT NOT NULL DEFAULT '';
