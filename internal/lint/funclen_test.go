// Package lint holds tests that hold the whole repository to its house
// rules; it has no code of its own.
package lint

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// maxFuncLines is the longest a production function body may be, in lines
// between its braces: a function longer than a screen usually holds two
// ideas.
const maxFuncLines = 80

// exempt are the trees whose code is not production code: the netns lab
// and the examples run tests and demos, not the daemon.
var exempt = []string{"internal/lab", "examples"}

// TestFunctionLength fails, naming file:line, function and length, for
// every function body over maxFuncLines lines in a non-test .go file of the
// repository, apart from the exempt trees and generated files (bpf2go's
// *_bpfel.go and *_bpfeb.go).
func TestFunctionLength(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	long, files := longFunctions(t, root, maxFuncLines)
	if files < 20 {
		t.Fatalf("read only %d files under %s: is the test walking the repository?", files, root)
	}
	for _, l := range long {
		t.Errorf("%s is %d lines, over the limit of %d: split it by idea (tests, %s and generated files are exempt)",
			l, l.lines, maxFuncLines, strings.Join(exempt, ", "))
	}
}

type longFunc struct {
	pos   token.Position
	name  string
	lines int
}

func (l longFunc) String() string {
	return fmt.Sprintf("%s:%d: %s", l.pos.Filename, l.pos.Line, l.name)
}

// longFunctions returns the functions under root whose bodies are longer
// than limit lines, and how many files it read.
func longFunctions(t *testing.T, root string, limit int) (long []longFunc, files int) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "testdata" || d.Name() == "vendor" || isExempt(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		files++
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			n := fset.Position(fn.Body.Rbrace).Line - fset.Position(fn.Body.Lbrace).Line - 1
			if n > limit {
				pos := fset.Position(fn.Pos())
				pos.Filename = rel
				long = append(long, longFunc{pos: pos, name: funcName(fn), lines: n})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return long, files
}

func isExempt(rel string) bool {
	for _, e := range exempt {
		if rel == e {
			return true
		}
	}
	return false
}

// funcName names a function as a reader looks it up: Type.Method or Func.
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	typ := fn.Recv.List[0].Type
	if s, ok := typ.(*ast.StarExpr); ok {
		typ = s.X
	}
	if g, ok := typ.(*ast.IndexExpr); ok { // a generic type's method
		typ = g.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name + "." + fn.Name.Name
	}
	return fn.Name.Name
}
