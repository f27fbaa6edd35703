#!/usr/bin/env bash
# doc-section.sh DOC HEADING: replaces the section of the Markdown file DOC
# whose heading line is exactly HEADING (up to the next "## " heading) with
# the text on stdin, or appends it. An exact match, not a pattern, so that
# "## Pod VM (…)" never takes "## Pod VM templates (…)" with it.
#   printf '## X\n\nbody\n' | scripts/doc-section.sh docs/benchmarks.md '## X'
set -euo pipefail
doc=$1 heading=$2
section=$(cat)
[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
awk -v sec="$section" -v h="$heading" '
  $0 == h { print sec; print ""; skip=1; done=1; next }
  skip && /^## / { skip=0 }
  !skip { print }
  END { if (!done) { print ""; print sec } }' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
