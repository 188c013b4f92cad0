// Package wholefile writes a file whole or not at all: the bytes go to a
// temporary file beside it (the same directory, so the same file system
// and the same owner's reach), synced, then renamed over it. A reader
// sees the old file or the new one, and a kill leaves at most a
// ".NAME.*" temporary beside it. (github.com/google/renameio does this
// too, but may stage in $TMPDIR, where another uid can write.)
package wholefile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
