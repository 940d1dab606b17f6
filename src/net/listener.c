/* Listening sockets over evconnlistener. "*" opens an IPv6 socket that
 * also accepts IPv4 where the system allows it, falling back to IPv4
 * alone; explicit addresses bind exactly. */
#include "net/listener.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

struct pl_listener {
	struct evconnlistener *listener; /* owned; closes the socket */
	struct event *resume;            /* re-enables accepting after EMFILE */
	pl_accept_fn on_accept;
	void *userdata;
	int port;
	char label[64];
};

static void on_connection(struct evconnlistener *ev, evutil_socket_t fd,
			  struct sockaddr *peer, int peer_len, void *arg)
{
	struct pl_listener *l = arg;
	/* Stanzas are written whole, a loop iteration at a time: waiting for
	 * more (Nagle) only adds a delayed-ACK round (40 ms) to answers made
	 * of several writes, such as an archive page. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->on_accept(fd, peer, (socklen_t)peer_len, l->userdata);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct pl_listener *l = arg;
	evconnlistener_enable(l->listener);
}

static void on_accept_error(struct evconnlistener *ev, void *arg)
{
	struct pl_listener *l = arg;
	int error = EVUTIL_SOCKET_ERROR();
	pl_log(PL_LOG_WARN, "net", "accept on %s failed: %s; pausing accepts for 100 ms",
	       l->label, strerror(error));
	/* Out of descriptors: retrying at once would spin the loop. */
	evconnlistener_disable(l->listener);
	struct timeval pause = { 0, 100000 };
	event_add(l->resume, &pause);
}

int pl_listener_open(struct event_base *base, const char *address, int port,
		     pl_accept_fn on_accept, void *userdata, struct pl_listener **out,
		     char **error)
{
	struct sockaddr_storage storage;
	memset(&storage, 0, sizeof(storage));
	socklen_t len;
	bool any = strcmp(address, "*") == 0;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
	if (any || strchr(address, ':')) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		if (any)
			in6->sin6_addr = in6addr_any;
		else if (inet_pton(AF_INET6, address, &in6->sin6_addr) != 1)
			return pl_error(error, -EINVAL, "cannot listen on %s: not an address", address);
		len = sizeof(*in6);
	} else {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, address, &in4->sin_addr) != 1)
			return pl_error(error, -EINVAL, "cannot listen on %s: not an address", address);
		len = sizeof(*in4);
	}
	int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 && any) {
		/* No IPv6 on this machine: all IPv4 addresses instead. */
		memset(&storage, 0, sizeof(storage));
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		in4->sin_addr.s_addr = htonl(INADDR_ANY);
		len = sizeof(*in4);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	}
	if (fd < 0)
		return pl_error(error, -errno, "cannot create a socket for %s:%d: %s", address, port,
				strerror(errno));
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (storage.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, any ? &zero : &one, sizeof(int));
	if (bind(fd, (struct sockaddr *)&storage, len) != 0) {
		int code = pl_error(error, -errno, "cannot listen on %s:%d: %s", address, port,
				    strerror(errno));
		close(fd);
		return code;
	}
	struct pl_listener *l = pl_calloc(1, sizeof(*l));
	l->on_accept = on_accept;
	l->userdata = userdata;
	l->listener = evconnlistener_new(base, on_connection, l,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024, fd);
	if (!l->listener) {
		int code = pl_error(error, -errno, "cannot listen on %s:%d: %s", address, port,
				    strerror(errno));
		close(fd);
		free(l);
		return code;
	}
	evconnlistener_set_error_cb(l->listener, on_accept_error);
	l->resume = evtimer_new(base, on_resume, l);
	struct sockaddr_storage bound;
	socklen_t bound_len = sizeof(bound);
	getsockname(fd, (struct sockaddr *)&bound, &bound_len);
	l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
						    : ((struct sockaddr_in *)&bound)->sin_port);
	snprintf(l->label, sizeof(l->label), "%s:%d", address, l->port);
	*out = l;
	return 0;
}

void pl_listener_close(struct pl_listener *l)
{
	if (!l)
		return;
	evconnlistener_free(l->listener);
	event_free(l->resume);
	free(l);
}

int pl_listener_port(const struct pl_listener *l)
{
	return l->port;
}
