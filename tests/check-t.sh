#!/bin/sh
# rategate -t: the gateway's own checks of a rule set (the upstreams it
# names) report FILE:LINE:COL like the rule parser does, point at the URI,
# and decide the exit status: a CGI program that is missing, not a regular
# file or not executable is an error; a unix socket that does not exist yet
# is a warning (the application may start after rategate).
set -u
bin="${top_builddir:-.}/rategate"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail=0
expect() {  # name, expected exit status, file with expected stderr
	if [ "$rc" != "$2" ]; then
		echo "FAIL: $1: exit status $rc, expected $2"; fail=1
	elif ! diff -u "$3" "$d/err"; then
		echo "FAIL: $1: stderr differs (above)"; fail=1
	else
		echo "ok: $1"
	fi
}
mkdir "$d/dir"
printf '#!/bin/sh\n' > "$d/noexec.cgi"
printf '#!/bin/sh\n' > "$d/ok.cgi"
chmod +x "$d/ok.cgi"
cat > "$d/bad.rules" <<RULES
storage shm:$d/store?size=2M
upstream   fcgi+unix://$d/app.sock
/a 1/minute upstream=cgi:$d/missing.cgi
/b  1/minute  upstream=cgi:$d/dir
/c 1/minute upstream=cgi:$d/noexec.cgi
/d 1/minute upstream=cgi:$d/ok.cgi
RULES
"$bin" -t -c "$d/bad.rules" >/dev/null 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/bad.rules:2:12: warning: upstream fcgi+unix://$d/app.sock: No such file or directory (the application is not running yet?)
$d/bad.rules:3:22: upstream cgi:$d/missing.cgi: No such file or directory
$d/bad.rules:4:24: upstream cgi:$d/dir: not a regular file
$d/bad.rules:5:22: upstream cgi:$d/noexec.cgi: not executable
rategate: $d/bad.rules: 3 errors in the gateway settings
WANT
expect "bad upstreams: one line each, at the URI" 1 "$d/want"

printf 'storage shm:%s/store?size=2M\nupstream fcgi+unix://%s/app.sock\n/d 1/minute upstream=cgi:%s/ok.cgi\n' \
	"$d" "$d" "$d" > "$d/warn.rules"
"$bin" -t -c "$d/warn.rules" >"$d/out" 2>"$d/err"; rc=$?
printf '%s/warn.rules:2:10: warning: upstream fcgi+unix://%s/app.sock: No such file or directory (the application is not running yet?)\n' \
	"$d" "$d" > "$d/want"
expect "a socket not there yet is only a warning" 0 "$d/want"
case "$(cat "$d/out")" in
*"warn.rules: ok: 1 rule in 1 file;"*) echo "ok: ... and the summary line follows" ;;
*) echo "FAIL: no summary line:"; cat "$d/out"; fail=1 ;;
esac
exit $fail
