package tokenfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	tokens := Open(filepath.Join(t.TempDir(), "dir", "tokens.json"), Kind{Prefix: "t_", Bytes: 20, Noun: "key", List: "x list"})
	a, ta, err := tokens.Create(Token{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, tb, err := tokens.Create(Token{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, "t_") || len(a) != 42 {
		t.Fatalf("secret %q: want t_ and 40 hex digits", a)
	}
	if fi, err := os.Stat(tokens.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
	if got, ok, err := tokens.Verify(a); !ok || err != nil || got.ID != ta.ID {
		t.Fatalf("Verify(a) = %+v, %v, %v", got, ok, err)
	}
	list, _ := tokens.List()
	if len(list) != 2 || list[0].Hash != "" || list[1].Name != "b" {
		t.Fatalf("List = %+v", list)
	}
	if _, ok, _ := tokens.Verify(a + "0"); ok {
		t.Fatal("a longer secret verified")
	}
	if _, _, err := tokens.Create(Token{Name: "c", MaxSandboxes: -1}); err == nil {
		t.Fatal("a negative limit was taken")
	}
	if _, err := tokens.Revoke("zzz"); err == nil {
		t.Fatal("revoked an unknown token")
	}
	if _, _, err := tokens.Create(Token{Name: "a\x1b[2J"}); err == nil {
		t.Fatal("a name with an escape sequence was taken")
	}
	if _, err := tokens.Revoke(tb.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := tokens.Verify(a); !ok {
		t.Fatal("revoking b revoked a")
	}
}
