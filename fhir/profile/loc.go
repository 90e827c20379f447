package profile

import (
	"strconv"

	"github.com/ems-broker/ems/fhir"
)

// loc is the location of the element being checked: the walker's root and
// the first loc steps of its path stack, rendered as a fhir.Path only when a problem is
// reported there. Building the path text for every element (string
// concatenation, and counting same-name siblings for the index) cost more
// than most of the checks, and a valid message needs none of it. (A chain
// of steps on the Go stack would be neater, but escape analysis cannot see
// that the recursion never keeps one, and would move them all to the heap.)
//
// A loc stays valid while the walk is below it: a new location at the
// same depth overwrites the steps past it, so only the innermost locations
// may be extended, which is how a depth-first walk uses them.
type loc int

// step is one element of a location after the root (walker.root): name
// when index < 0, else name[index], or, when parent is set, name[k] where
// k counts the same-name siblings before parent.Children[index].
type step struct {
	name   string
	parent *fhir.Node
	index  int
}

// rootLoc starts a location stack at p.
func (w *walker) rootLoc(p fhir.Path) loc {
	w.root = p
	w.steps = w.steps[:0]
	return 0
}

func (w *walker) push(at loc, s step) loc {
	w.steps = append(w.steps[:at], s)
	return at + 1
}

// field is the location of a non-repeating child.
func (w *walker) field(at loc, name string) loc { return w.push(at, step{name: name, index: -1}) }

// index is the location of a repeating child with a known index.
func (w *walker) index(at loc, name string, i int) loc {
	return w.push(at, step{name: name, index: i})
}

// childLoc is the location of parent.Children[i]: indexed among its
// same-name siblings when the element repeats.
func (w *walker) childLoc(at loc, parent *fhir.Node, i int, repeats bool) loc {
	c := parent.Children[i]
	if !repeats {
		return w.push(at, step{name: c.Name, index: -1})
	}
	return w.push(at, step{name: c.Name, index: i, parent: parent})
}

// path renders at the way fhir.Path.Field and Index would have built it.
func (w *walker) path(at loc) fhir.Path {
	if at == 0 {
		return w.root
	}
	b := make([]byte, 0, 96)
	b = append(b, w.root...)
	for _, s := range w.steps[:at] {
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, s.name...)
		if s.index >= 0 {
			k := s.index
			if s.parent != nil {
				k = 0
				for _, c := range s.parent.Children[:s.index] {
					if c.Name == s.name {
						k++
					}
				}
			}
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(k), 10)
			b = append(b, ']')
		}
	}
	return fhir.Path(b)
}
