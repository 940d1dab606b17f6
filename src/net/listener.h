/* Listening sockets: "address:port" strings parsed, bound with
 * SO_REUSEADDR (and IPV6_V6ONLY for "::"), accepted through libevent's
 * evconnlistener. Accept errors such as EMFILE pause accepting for a
 * moment instead of spinning. Network thread only. */
#ifndef PL_NET_LISTENER_H
#define PL_NET_LISTENER_H

#include <sys/socket.h>

struct event_base;
struct pl_listener;

typedef void (*pl_accept_fn)(int fd, const struct sockaddr *peer, socklen_t peer_len,
			     void *userdata);

/* address: "127.0.0.1", "::", "*" (all IPv4 and IPv6). Returns 0 or -errno
 * with *error ("cannot listen on 127.0.0.1:5222: Address already in use"). */
int pl_listener_open(struct event_base *base, const char *address, int port,
		     pl_accept_fn on_accept, void *userdata, struct pl_listener **out,
		     char **error);
void pl_listener_close(struct pl_listener *listener);
/* The bound port (useful when port 0 asked for any). */
int pl_listener_port(const struct pl_listener *listener);

#endif
