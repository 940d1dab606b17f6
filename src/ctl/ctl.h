/* The admin control socket: a UNIX stream socket (mode 0600) that
 * parleyctl talks to. One request per connection: the client writes one
 * line of fields, the server answers "ok" or "error <message>" on the
 * first line, then body lines, and closes. Fields are separated by single
 * spaces and percent-encoded (see protocol.h), so passwords may hold any
 * byte but NUL. */
#ifndef PL_CTL_H
#define PL_CTL_H

struct event_base;

/* Binds the socket (replacing a stale one left by a crashed daemon, but
 * refusing if a live daemon answers on it). 0 or -errno with *error. */
int pl_ctl_server_start(struct event_base *base, const char *socket_path, char **error);
/* Closes the socket, removes the file, frees pending connections. */
void pl_ctl_server_stop(void);

#endif
