package roottest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
)

// User is a throwaway system user made for a test.
type User struct {
	Name     string
	UID, GID int
}

// AddUser makes a system user, without a home or a shell, whose name
// starts with prefix; remove deletes it.
func AddUser(prefix string) (u User, remove func(), err error) {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		return User{}, nil, fmt.Errorf("useradd: %v: %s", err, out)
	}
	remove = func() { _ = exec.Command("userdel", name).Run() }
	found, err := user.Lookup(name)
	if err != nil {
		remove()
		return User{}, nil, err
	}
	uid, _ := strconv.Atoi(found.Uid)
	gid, _ := strconv.Atoi(found.Gid)
	return User{Name: name, UID: uid, GID: gid}, remove, nil
}
