// Package ociref reads the image references users give (debian:bookworm,
// registry.example.com/team/app:1.2) and spells them the way records
// store them, for the image and kernel services alike.
package ociref

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/bangerdev/banger/api"
)

// Parse reads s; insecure lets the registry be reached over plain HTTP.
// A malformed reference is api.ErrInvalidArgument.
func Parse(s string, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not an image reference such as debian:bookworm or registry.example.com/team/app:1.2: %v", api.ErrInvalidArgument, s, err)
	}
	return ref, nil
}

// Normalize spells a reference the way records store it:
// "debian" → "docker.io/library/debian:latest".
func Normalize(ref name.Reference) string {
	return strings.Replace(ref.Name(), name.DefaultRegistry+"/", "docker.io/", 1)
}
