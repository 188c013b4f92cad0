//go:build !crashpoints

package crashpoint

// Enabled says whether this build has crash points (the crashpoints tag).
const Enabled = false

// At does nothing in a build without the crashpoints tag.
func At(verb, what string) {}
