package opa

import "strings"

// regoKeywords may be followed by a parenthesized expression; a space
// after them is no call.
var regoKeywords = map[string]bool{
	"not": true, "in": true, "some": true, "every": true, "with": true, "as": true, "if": true,
	"contains": true, "else": true, "default": true, "import": true, "package": true, "null": true,
	"true": true, "false": true,
}

// joinCallParens removes the blanks between a name and the "(" of its
// call, outside strings and comments: regorus, Kata's Rego engine,
// accepts `print ("x")`, and genpolicy's rules.rego has such a call, which
// OPA's parser refuses. Compile applies it only to text that does not
// parse as it is.
func joinCallParens(text string) string {
	var b strings.Builder
	b.Grow(len(text))
	for i := 0; i < len(text); {
		c := text[i]
		j := i + 1
		switch {
		case c == '#':
			j = lineEnd(text, i)
		case c == '"' || c == '`':
			j = stringEnd(text, i)
		case isNameStart(c):
			j = nameEnd(text, i)
			b.WriteString(text[i:j])
			i = callParen(text, text[i:j], j)
			continue
		}
		b.WriteString(text[i:j])
		i = j
	}
	return b.String()
}

// lineEnd is the index of the newline ending the line at i (a comment).
func lineEnd(text string, i int) int {
	if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(text)
}

// stringEnd is the index after the string literal opening at i.
func stringEnd(text string, i int) int {
	quote := text[i]
	j := i + 1
	for j < len(text) && text[j] != quote && text[j] != '\n' {
		if quote == '"' && text[j] == '\\' {
			j++
		}
		j++
	}
	return min(j+1, len(text))
}

// nameEnd is the index after the name (a dotted ref) starting at i.
func nameEnd(text string, i int) int {
	for i < len(text) && isNameByte(text[i]) {
		i++
	}
	return i
}

// callParen is where to go on after name, which ends at j: past the blanks
// that separate it from a "(", making it a call, or j.
func callParen(text, name string, j int) int {
	k := j
	for k < len(text) && (text[k] == ' ' || text[k] == '\t') {
		k++
	}
	if k > j && k < len(text) && text[k] == '(' && !regoKeywords[name] {
		return k
	}
	return j
}

func isNameStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isNameByte(c byte) bool { return isNameStart(c) || (c >= '0' && c <= '9') || c == '.' }
