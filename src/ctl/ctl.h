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

/* Commands modules add: a verb the core does not know fires
 * "ctl/<verb>" with this. A handler that takes it returns PL_HANDLED and
 * calls pl_ctl_command_done once (later is fine); one that finds the
 * arguments wrong sets `usage` (malloc'd) and returns PL_HANDLED without
 * calling done. */
struct pl_ctl_command {
	char **fields;            /* fields[0] is the verb; borrowed */
	int count;
	char *usage;
	void *request;            /* for pl_ctl_command_done */
};
/* status 0 answers "ok" (with body lines if body is not NULL), otherwise
 * an error naming the command, the subject and strerror(-status). */
void pl_ctl_command_done(void *request, int status, const char *body);
/* The same without a body, shaped as a store completion (pl_store_done_fn). */
void pl_ctl_command_done_status(void *request, int status);

#endif
