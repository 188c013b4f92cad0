// Package kmod reads Linux kernel modules: the .modinfo section of a .ko
// file (plain, .xz, .zst or .gz), and the load order of a set of modules
// with everything they depend on, resolved from the modules themselves
// (depends=, softdep=pre:, alias=) because a distribution kernel package
// ships no modules.dep.
package kmod

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrNotFound means a module (or alias) is in neither the index nor the
// kernel's built-in list.
var ErrNotFound = errors.New("module not found")

// ErrCycle means modules depend on each other in a loop.
var ErrCycle = errors.New("module dependency cycle")

// maxModuleSize bounds a decompressed module; the largest real ones are a
// few tens of MiB.
const maxModuleSize = 256 << 20

// Info is what a module says about itself.
type Info struct {
	Name    string   // canonical: dashes become underscores
	Path    string   // file, relative to the modules directory
	Depends []string // hard dependencies, by name
	PreDeps []string // softdep pre: names or aliases, loaded first
	Aliases []string
}

// Canonical spells a module name as the kernel does.
func Canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// ModuleName is the name a module file would have without a name= field.
func ModuleName(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return Canonical(strings.TrimSuffix(base, ".ko"))
}

// IsModule reports whether path names a kernel module file.
func IsModule(path string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(path, ext) {
			return true
		}
	}
	return false
}

// Decompress returns the ELF bytes of a module file's contents, which may
// be xz, zstd or gzip compressed.
func Decompress(data []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decompressing xz: %w", err)
		}
		r = xr
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompressing zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decompressing gzip: %w", err)
		}
		r = gr
	default:
		return data, nil
	}
	out, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	if len(out) > maxModuleSize {
		return nil, fmt.Errorf("decompressing: more than %d bytes", maxModuleSize)
	}
	return out, nil
}

// Parse reads the .modinfo of a module file's contents.
func Parse(data []byte) (info Info, err error) {
	defer func() {
		// debug/elf is not hardened against every malformed file.
		if p := recover(); p != nil {
			err = fmt.Errorf("reading ELF: malformed file (%v)", p)
		}
	}()
	raw, err := Decompress(data)
	if err != nil {
		return Info{}, err
	}
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		return Info{}, fmt.Errorf("reading ELF: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, errors.New("no .modinfo section: not a kernel module")
	}
	if sec.Size > uint64(len(raw)) {
		return Info{}, errors.New("reading .modinfo: section larger than the file")
	}
	b, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("reading .modinfo: %w", err)
	}
	for _, field := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(field), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			info.Name = Canonical(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info.Depends = append(info.Depends, Canonical(d))
				}
			}
		case "softdep":
			// "pre: a b post: c": only pre-dependencies must load first.
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						info.PreDeps = append(info.PreDeps, w)
					}
				}
			}
		case "alias":
			info.Aliases = append(info.Aliases, v)
		}
	}
	return info, nil
}

// Index is every module of one kernel.
type Index struct {
	Dir     string
	byName  map[string]*Info
	byAlias map[string]string // alias -> module name
	builtin map[string]bool
}

// Load indexes the modules under dir (a /lib/modules/<version> tree),
// including its modules.builtin list when present.
func Load(dir string) (*Index, error) {
	idx := &Index{Dir: dir, byName: map[string]*Info{}, byAlias: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || !IsModule(p) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := Parse(data)
		if err != nil {
			return fmt.Errorf("module %s: %w", p, err)
		}
		rel, _ := filepath.Rel(dir, p)
		info.Path = rel
		if info.Name == "" {
			info.Name = ModuleName(p)
		}
		idx.add(info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules in %s: %w", dir, err)
	}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			idx.builtin[ModuleName(sc.Text())] = true
		}
	}
	return idx, nil
}

// NewIndex builds an index from infos, for tests and callers that parsed
// modules themselves.
func NewIndex(infos []Info, builtin []string) *Index {
	idx := &Index{byName: map[string]*Info{}, byAlias: map[string]string{}, builtin: map[string]bool{}}
	for _, in := range infos {
		idx.add(in)
	}
	for _, b := range builtin {
		idx.builtin[ModuleName(b)] = true
	}
	return idx
}

func (idx *Index) add(info Info) {
	in := info
	idx.byName[in.Name] = &in
	for _, a := range in.Aliases {
		// Several modules may provide an alias (crypto-crc32c: crc32c_intel
		// and crc32c_generic). Prefer the generic one: it loads on any CPU,
		// an emulated one included.
		if prev, taken := idx.byAlias[a]; !taken || (!strings.HasSuffix(prev, "_generic") && strings.HasSuffix(in.Name, "_generic")) {
			idx.byAlias[a] = in.Name
		}
	}
}

// Len is the number of modules indexed.
func (idx *Index) Len() int { return len(idx.byName) }

// lookup finds a module by name or alias. builtin reports a module that
// needs no loading.
func (idx *Index) lookup(name string) (info *Info, builtin bool, err error) {
	c := Canonical(name)
	if in, ok := idx.byName[c]; ok {
		return in, false, nil
	}
	if idx.builtin[c] {
		return nil, true, nil
	}
	if target, ok := idx.byAlias[name]; ok {
		return idx.byName[target], false, nil
	}
	return nil, false, fmt.Errorf("%w: %s", ErrNotFound, name)
}

// Resolve returns the modules to load for wanted (names or aliases), every
// dependency before its dependents. Built-in modules are skipped.
func (idx *Index) Resolve(wanted ...string) ([]Info, error) {
	var order []Info
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		in, builtin, err := idx.lookup(name)
		if err != nil {
			if len(chain) > 0 {
				return fmt.Errorf("%w (needed by %s)", err, strings.Join(chain, " <- "))
			}
			return err
		}
		if builtin {
			return nil
		}
		switch state[in.Name] {
		case 1:
			return fmt.Errorf("%w: %s", ErrCycle, strings.Join(append(chain, in.Name), " -> "))
		case 2:
			return nil
		}
		state[in.Name] = 1
		chain = append(chain, in.Name)
		for _, d := range in.PreDeps {
			if err := visit(d, chain); err != nil {
				// A soft dependency that this kernel lacks is not fatal.
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return err
			}
		}
		deps := append([]string(nil), in.Depends...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, chain); err != nil {
				return err
			}
		}
		state[in.Name] = 2
		order = append(order, *in)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// sigMarker ends a module's appended signature.
const sigMarker = "~Module signature appended~\n"

// StripSignature removes a module's appended signature, if any. The
// kernel then loads it without verifying it (unless it enforces
// signatures), which under emulation saves most of the module load time:
// the RSA verification runs on an emulated CPU.
func StripSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, []byte(sigMarker)) {
		return ko
	}
	body := ko[:len(ko)-len(sigMarker)]
	// struct module_signature: 12 bytes, sig_len (big endian) last.
	if len(body) < 12 {
		return ko
	}
	info := body[len(body)-12:]
	sigLen := int(binary.BigEndian.Uint32(info[8:]))
	end := len(body) - 12 - sigLen
	if sigLen <= 0 || end < 0 {
		return ko
	}
	return ko[:end]
}
