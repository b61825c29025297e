/*
 * wrapper.h - rategate as a CGI program in front of another (see wrapper.c
 * for what this mode can and cannot do).
 */
#ifndef GATEWAY_WRAPPER_H
#define GATEWAY_WRAPPER_H

/* Decide on the request described by the environment (CGI/1.1) under the
 * rules file; deny by printing a CGI response, or execve script (NULL: the
 * `upstream cgi:` of the matched rule or of the rule set).  Returns only
 * when it did not exec: the process exit status (0 when a response was
 * printed). */
int wrapper_main(const char *rules, const char *script);

/* A CGI run refused before the rules are read (main.c says why on
 * standard error): 500 Internal Server Error, as wrapper_main's own (a
 * status line for an nph- script under Apache, the body read and
 * dropped).  Returns the exit status. */
int wrapper_refuse(void);

#endif
