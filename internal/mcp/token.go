package mcp

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/tokenfile"
)

// Tokens are the bearer tokens of `banger mcp --http`.
type Tokens = tokenfile.Tokens

// tokenKind: "bgr_mcp_" and 32 random bytes, so that a leaked token is
// recognisable (and secret scanners can find it).
var tokenKind = tokenfile.Kind{Prefix: "bgr_mcp_", Bytes: 32, Noun: "token", List: "banger mcp token list"}

// TokenFile is where the tokens of this user live: beside BANGER_HOME's
// state when it is set, else in the user's config directory.
func TokenFile(getenv func(string) string) (string, error) {
	if home := getenv("BANGER_HOME"); home != "" {
		return filepath.Join(home, "mcp-tokens.json"), nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the config directory for mcp-tokens.json: %w", err)
	}
	return filepath.Join(dir, "banger", "mcp-tokens.json"), nil
}

// OpenTokens is the token file at path (made on the first Create).
func OpenTokens(path string) *Tokens { return tokenfile.Open(path, tokenKind) }
