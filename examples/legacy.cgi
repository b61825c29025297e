#!/bin/sh
# legacy.cgi - a small legacy CGI script of the kind rategate's CGI wrapper
# mode guards: it knows nothing about rate limits.  rategate runs first
# (as the CGI program the web server starts), decides, and either answers
# 429 itself or replaces itself with this script, which then gets the
# request (environment and body on standard input) exactly as the web
# server sent it, plus RL_CLIENT, RL_RULE, RL_LIMIT, RL_REMAINING and
# RL_RESET.
#
# See examples/lighttpd-cgi-wrapper.conf; tests/integration/test_cgi_wrapper.c
# runs it.

len=$(head -c "${CONTENT_LENGTH:-0}" | wc -c)
printf 'Content-Type: text/plain\r\n\r\n'
echo "legacy.cgi: $REQUEST_METHOD ${QUERY_STRING:-(no query)}"
echo "client: ${RL_CLIENT:-unknown}"
echo "limit: ${RL_LIMIT:-none}, ${RL_REMAINING:-?} left, full again in ${RL_RESET:-?} s"
echo "body: $len bytes"
