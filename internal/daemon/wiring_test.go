package daemon

import (
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoTwoDependenciesShareAShape: no struct outside the tests holds two
// function-typed fields of the same signature (its parameters' names
// aside), such as a stop and a suspend of one VM: swapped where they are
// wired, they would compile. A dependency with several methods is a small
// interface its consumer declares; the compiler then checks each by name.
func TestNoTwoDependenciesShareAShape(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	for _, root := range []string{"../../internal", "../../api", "../../cmd"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok {
					return true
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return true
				}
				checked++
				seen := map[string]string{}
				for _, field := range st.Fields.List {
					ft, ok := field.Type.(*ast.FuncType)
					if !ok {
						continue
					}
					shape := signature(fset, ft)
					for _, name := range field.Names {
						if other, ok := seen[shape]; ok {
							t.Errorf("%s: %s.%s and %s.%s are both %s: declare the consumer's interface instead", path, ts.Name.Name, other, ts.Name.Name, name.Name, shape)
						}
						seen[shape] = name.Name
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 100 {
		t.Fatalf("checked only %d structs", checked)
	}
}

// signature is a function type without its parameters' names.
func signature(fset *token.FileSet, ft *ast.FuncType) string {
	var b strings.Builder
	for _, list := range []*ast.FieldList{ft.Params, ft.Results} {
		b.WriteString("(")
		if list != nil {
			for _, f := range list.List {
				for range max(len(f.Names), 1) {
					_ = printer.Fprint(&b, fset, f.Type)
					b.WriteString(",")
				}
			}
		}
		b.WriteString(")")
	}
	return b.String()
}
