#!/bin/sh
# check-man.sh - the manual pages (run by make check; by hand:
# top_srcdir=. top_builddir=build/x tests/check-man.sh).
#
#   a. man/rategate.8 and man/rategate.rules.5 are plain ASCII, render
#      with groff -t -man -ww (every warning) at 80 columns without a
#      single warning, and no rendered line is wider than 80 columns;
#   b. every global directive and every rule option in the tables of
#      rules/parse.c has its own entry (a .TP tag) in rategate.rules(5),
#      under GLOBAL DIRECTIVES and RULE OPTIONS, and every such entry names
#      one that exists; the last example of rategate.rules(5) loads
#      (rategate -t);
#   c. every sub-command and option `rategate --help` prints is in the
#      SYNOPSIS of rategate(8) and has an entry under OPTIONS, and the
#      pages it refers to are the ones we ship;
#   d. Makefile.am installs both pages (dist_man_MANS).
#
# Exits 0 when everything holds, 1 otherwise, saying what is wrong.
set -u

: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=.}"
PAGES="man/rategate.8 man/rategate.rules.5"
PARSE_C=$top_srcdir/rules/parse.c
RATEGATE=$top_builddir/rategate
fails=0
checks=0

ok() { checks=$((checks + 1)); printf 'ok: %s\n' "$*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); printf 'FAIL: %s\n' "$*"; }

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# The first word of each .TP/.TQ tag (all words with ALL=1) in section SEC
# of a page, tags of nested lists (.RS ... .RE) left out; roff escapes
# undone (\- is -, font changes and \& vanish), a trailing =value dropped.
tags() {
	awk -v sec="$1" -v all="${ALL:-0}" '
	/^\.SH/ {
		s = $0; sub(/^\.SH[ \t]*/, "", s); gsub(/"/, "", s)
		insec = (s == sec); depth = 0; want = 0; next
	}
	!insec { next }
	/^\.RS/ { depth++; next }
	/^\.RE/ { if (depth > 0) depth--; next }
	/^\.(TP|TQ)/ { want = (depth == 0); next }
	want {
		want = 0
		if ($0 !~ /^\.(B|BI|BR|IB|RB)[ \t]/) next
		line = $0
		sub(/^\.[A-Z]+[ \t]+/, "", line)
		gsub(/\\-/, "-", line); gsub(/\\f[BIRP]/, "", line)
		gsub(/\\&/, "", line); gsub(/\\\(dq/, "", line); gsub(/"/, " ", line)
		n = split(line, w, /[ \t]+/)
		for (i = 1; i <= n; i++) {
			if (w[i] == "") continue
			x = w[i]; sub(/=.*/, "", x)
			if (x != "") print x
			if (!all) break
		}
	}' "$2"
}

# The words of section SEC of a page, roff escapes undone, one a line.
words() {
	awk -v sec="$1" '
	/^\.SH/ {
		s = $0; sub(/^\.SH[ \t]*/, "", s); gsub(/"/, "", s)
		insec = (s == sec); next
	}
	insec {
		line = $0
		sub(/^\.[A-Z]+[ \t]*/, "", line)
		gsub(/\\-/, "-", line); gsub(/\\f[BIRP]/, "", line)
		gsub(/\\&/, "", line); gsub(/["()|\[\]]/, " ", line)
		n = split(line, w, /[ \t]+/)
		for (i = 1; i <= n; i++) if (w[i] != "") print w[i]
	}' "$2"
}

# The names of a table in parse.c: the first string of each row of
# "static const struct ... NAME[] = {" up to "};".
table() {
	awk -v t="$1" '
	$0 ~ "[ \t]" t "\\[\\][ \t]*=[ \t]*\\{" { on = 1; next }
	on && /^[ \t]*\};/ { exit }
	on && match($0, /^[ \t]*\{[ \t]*"[^"]+"/) {
		s = substr($0, RSTART, RLENGTH)
		sub(/^[^"]*"/, "", s); sub(/"$/, "", s)
		print s
	}' "$PARSE_C"
}

# ---------------------------------------------------------------- a
if ! command -v groff >/dev/null 2>&1; then
	bad "groff is not installed (Debian package groff-base, in tests/debian-packages)"
	exit 1
fi
for p in $PAGES; do
	f=$top_srcdir/$p
	if [ ! -f "$f" ]; then
		bad "$p: missing"
		continue
	fi
	if LC_ALL=C grep -n "$(printf '[^\t -~]')" "$f" > "$tmp/nonascii"; then
		bad "$p: bytes outside printable ASCII (write roff escapes such as \\(em):"
		sed 's/^/    /' "$tmp/nonascii"
	else
		ok "$p: plain ASCII"
	fi
	# 80 columns, as man(1) renders for MANWIDTH=80 (78n line length).
	groff -t -man -Tutf8 -ww -z -rLL=78n "$f" > "$tmp/warn" 2>&1
	if [ -s "$tmp/warn" ]; then
		bad "$p: groff -t -man -Tutf8 -ww warns:"
		sed 's/^/    /' "$tmp/warn"
	else
		ok "$p: groff -t -man -Tutf8 -ww: no warning"
	fi
	if command -v man >/dev/null 2>&1; then
		MANWIDTH=80 man --warnings -l "$f" > /dev/null 2> "$tmp/warn"
		if [ -s "$tmp/warn" ]; then
			bad "$p: man --warnings -l warns:"
			sed 's/^/    /' "$tmp/warn"
		else
			ok "$p: man --warnings -l: no warning"
		fi
	fi
	groff -t -man -Tascii -rLL=78n -P-c -P-b -P-u "$f" 2>/dev/null |
		awk 'length($0) > 80 { print length($0) " columns: " $0 }' > "$tmp/wide"
	if [ -s "$tmp/wide" ]; then
		bad "$p: rendered lines wider than 80 columns:"
		sed 's/^/    /' "$tmp/wide"
	else
		ok "$p: every rendered line fits 80 columns"
	fi
done

# ---------------------------------------------------------------- b
rules5=$top_srcdir/man/rategate.rules.5
table directives > "$tmp/directives"
table options > "$tmp/options"
nd=$(wc -l < "$tmp/directives")
no=$(wc -l < "$tmp/options")
# Far fewer rows than rategate has means the tables were not found (their
# format changed): fail rather than check nothing.
if [ "$nd" -lt 20 ] || [ "$no" -lt 10 ]; then
	bad "rules/parse.c: read $nd directives and $no options from its tables; expected the rows of 'static const struct directive directives[] = {' and 'static const struct option options[] = {' (fix this script if their format changed)"
fi
if [ -f "$rules5" ]; then
	tags "GLOBAL DIRECTIVES" "$rules5" > "$tmp/dtags"
	tags "RULE OPTIONS" "$rules5" > "$tmp/otags"
	for kind in directive option; do
		names=$tmp/${kind}s
		tagsf=$tmp/$(echo "$kind" | cut -c1)tags
		sec="GLOBAL DIRECTIVES"
		[ "$kind" = option ] && sec="RULE OPTIONS"
		missing=""
		while read -r n; do
			grep -qxF -- "$n" "$tagsf" || missing="$missing $n"
		done < "$names"
		if [ -n "$missing" ]; then
			bad "rategate.rules.5: ${kind}s of rules/parse.c without an entry under $sec:$missing"
		else
			ok "rategate.rules.5: all $(wc -l < "$names") ${kind}s of rules/parse.c have an entry under $sec"
		fi
		extra=""
		while read -r n; do
			grep -qxF -- "$n" "$names" || extra="$extra $n"
		done < "$tagsf"
		if [ -n "$extra" ]; then
			bad "rategate.rules.5: entries under $sec that rules/parse.c does not know as ${kind}s:$extra"
		else
			ok "rategate.rules.5: every entry under $sec is in the ${kind}s table of rules/parse.c"
		fi
	done
	# The last example is a complete rule file: it must load.  Its CGI
	# upstream becomes a program that exists here, and its store a file
	# here (-t checks an existing store file, and /dev/shm/rategate may
	# be anybody's).
	awk '/^\.EX/ { buf = ""; inb = 1; next }
	     /^\.EE/ { inb = 0; last = buf; next }
	     inb { buf = buf $0 "\n" }
	     END { printf "%s", last }' "$rules5" |
		sed -e 's/\\-/-/g' -e 's/\\e/\\/g' -e 's/\\(aq/'"'"'/g' \
		    -e 's|upstream=cgi:/[^ ]*|upstream=cgi:/bin/sh|' \
		    -e "s|^\\(storage[[:space:]]*\\)shm:[^?[:space:]]*|\\1shm:$tmp/store|" \
		    > "$tmp/example.rules"
	if [ ! -x "$RATEGATE" ]; then
		bad "$RATEGATE is not built: cannot check the example of rategate.rules.5"
	elif "$RATEGATE" -t -c "$tmp/example.rules" > "$tmp/t.out" 2>&1; then
		ok "rategate.rules.5: its complete example loads (rategate -t)"
	else
		bad "rategate.rules.5: its complete example does not load:"
		sed 's/^/    /' "$tmp/example.rules" "$tmp/t.out"
	fi
fi

# ---------------------------------------------------------------- c
rategate8=$top_srcdir/man/rategate.8
if [ ! -x "$RATEGATE" ]; then
	bad "$RATEGATE is not built: cannot compare rategate --help with rategate.8"
elif [ -f "$rategate8" ]; then
	"$RATEGATE" --help > "$tmp/help" 2>&1 || bad "rategate --help exits $?"
	# Sub-commands: the word after "rategate" on the usage lines, when it
	# is not an option.  Options: every -x / --word the help mentions.
	awk '$1 == "usage:" { w = $3 } $1 == "rategate" { w = $2 }
	     ($1 == "usage:" || $1 == "rategate") && w !~ /^-/ { print w }' \
		"$tmp/help" | sort -u > "$tmp/subcommands"
	grep -oE -- '(^|[][ (|])--?[A-Za-z][A-Za-z-]*' "$tmp/help" |
		sed 's/^[][ (|]*//' | sort -u > "$tmp/helpopts"
	if [ ! -s "$tmp/subcommands" ] || [ ! -s "$tmp/helpopts" ]; then
		bad "could not read sub-commands or options from rategate --help:"
		sed 's/^/    /' "$tmp/help"
	fi
	words SYNOPSIS "$rategate8" | sort -u > "$tmp/synopsis"
	ALL=1 tags OPTIONS "$rategate8" | sort -u > "$tmp/optags"
	missing=""
	for w in $(cat "$tmp/subcommands" "$tmp/helpopts"); do
		grep -qxF -- "$w" "$tmp/synopsis" || missing="$missing $w(SYNOPSIS)"
		grep -qxF -- "$w" "$tmp/optags" || missing="$missing $w(OPTIONS)"
	done
	if [ -n "$missing" ]; then
		bad "rategate.8: printed by rategate --help but missing from:$missing"
	else
		ok "rategate.8: every sub-command and option of rategate --help ($(cat "$tmp/subcommands" "$tmp/helpopts" | tr '\n' ' ')) is in SYNOPSIS and OPTIONS"
	fi
	refs=$(grep -oE '[a-z][a-z.]*\([0-9]\)' "$tmp/help" | sort -u)
	for r in $refs; do
		f=man/$(echo "$r" | sed 's/(\([0-9]\))$/.\1/')
		case " $PAGES " in
		*" $f "*) ok "rategate --help refers to $r: $f is shipped" ;;
		*) bad "rategate --help refers to $r, but $f is not among the pages ($PAGES)" ;;
		esac
	done
fi

# ---------------------------------------------------------------- d
awk '/^dist_man_MANS[ \t]*\+?=/ { on = 1 }
     on { print; if ($0 !~ /\\$/) on = 0 }' "$top_srcdir/Makefile.am" |
	sed 's/^dist_man_MANS[ \t]*+*=//' | tr -s ' \t\\' '\n\n\n' |
	grep -v '^$' > "$tmp/mans"
for p in $PAGES; do
	if grep -qxF -- "$p" "$tmp/mans"; then
		ok "Makefile.am: dist_man_MANS installs $p"
	else
		bad "Makefile.am: $p is not in dist_man_MANS (make install would not install it)"
	fi
done

echo "check-man: $((checks - fails)) of $checks checks ok, $fails failed"
[ "$fails" -eq 0 ]
