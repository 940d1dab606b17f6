/* External components, XEP-0114. A component connects in plaintext (it is
 * a trusted local program: the listener should be on loopback or a
 * private network), opens a jabber:component:accept stream to the domain
 * it serves, proves it knows the domain's shared secret with
 * <handshake>hex(SHA-1(stream id + secret))</handshake>, and from then on
 * exchanges stanzas with the server. Everything it sends must come from
 * its own domain (invalid-from otherwise) and name a recipient
 * (improper-addressing). A second connection for a connected domain
 * replaces the first, which ends with <conflict/> (a component that
 * restarted must not be locked out by its own half-dead connection), or,
 * with replace="false", is refused with <conflict/> as XEP-0114 section 3
 * describes. Each stream error is logged with its condition. */
#include "component.h"
#include "hooks.h"
#include "jid.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "router.h"
#include "server.h"
#include "util.h"
#include "xml/stream.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#define NS_COMPONENT "jabber:component:accept"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

struct listener_conf {
	char *address;
	int64_t port;
	uint64_t max_stanza_size;
	int64_t negotiation_timeout_ms;
};

static const struct pl_option listener_options[] = {
	{ "address", PL_OPT_STRING, "127.0.0.1", 0, 0, NULL,
	  offsetof(struct listener_conf, address), "listen address (keep it private)" },
	{ "port", PL_OPT_INT, "5347", 0, 65535, NULL, offsetof(struct listener_conf, port),
	  "component port, 0 for none" },
	{ "max-stanza-size", PL_OPT_SIZE, "1MiB", 4096, 64 << 20, NULL,
	  offsetof(struct listener_conf, max_stanza_size), NULL },
	{ "negotiation-timeout", PL_OPT_DURATION, "30s", 1000, 600000, NULL,
	  offsetof(struct listener_conf, negotiation_timeout_ms), NULL },
	{ NULL }
};

struct domain_conf {
	char *secret;
	bool replace;
};

static const struct pl_option domain_options[] = {
	{ "secret", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct domain_conf, secret),
	  "the shared secret of the handshake" },
	{ "replace", PL_OPT_BOOL, "true", 0, 0, NULL, offsetof(struct domain_conf, replace),
	  "a new connection replaces a connected one (false: it is refused)" },
	{ NULL }
};

struct stream;

/* A configured component domain; lives from start to stop. */
struct domain {
	char *name;                     /* owned, normalised */
	struct domain_conf conf;        /* owned strings (pl_options_free) */
	struct stream *connected;       /* borrowed: the authenticated stream, or NULL */
	struct domain *next;
};

enum stream_state { WAIT_HEADER, WAIT_HANDSHAKE, READY, CLOSING };

struct stream {
	struct pl_conn *conn;           /* owned: freed by the conn layer after on_close */
	struct pl_xml_stream *parser;   /* owned */
	struct domain *domain;          /* borrowed, set by the header */
	enum stream_state state;
	char stream_id[33];
	char log_id[24];
	struct stream *prev, *next;
};

static struct listener_conf conf;
static struct pl_listener *listener;
static struct event_base *loop;
static struct domain *domains;
static struct stream *streams;
static struct pl_xml_limits limits;

static struct domain *find_domain(const char *name)
{
	for (struct domain *d = domains; d; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

static void unlink_stream(struct stream *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else if (streams == s)
		streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
}

/* The domain stops being served by this stream (it stays configured). */
static void release_domain(struct stream *s)
{
	if (s->domain && s->domain->connected == s) {
		s->domain->connected = NULL;
		pl_log_session(PL_LOG_INFO, "component", s->log_id, "%s disconnected",
			       s->domain->name);
	}
}

static void free_stream(struct stream *s)
{
	release_domain(s);
	unlink_stream(s);
	pl_xml_stream_free(s->parser);
	free(s);
}

static void stream_error(struct stream *s, const char *condition, const char *text)
{
	if (s->state == CLOSING)
		return;
	pl_log_session(PL_LOG_INFO, "component", s->log_id, "%s%s%s: stream error %s%s%s",
		       pl_conn_peer_address(s->conn), s->domain ? " " : "",
		       s->domain ? s->domain->name : "", condition, text ? ": " : "",
		       text ? text : "");
	struct pl_buf out = { 0 };
	if (s->state == WAIT_HEADER)
		pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='" NS_COMPONENT "' "
				    "xmlns:stream='" PL_NS_STREAMS "' id='%s'>", s->stream_id);
	pl_buf_printf(&out, "<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>", condition);
	if (text) {
		pl_buf_puts(&out, "<text xmlns='" NS_STREAM_ERRORS "' xml:lang='en'>");
		pl_xml_escape(&out, text, strlen(text));
		pl_buf_puts(&out, "</text>");
	}
	pl_buf_puts(&out, "</stream:error></stream:stream>");
	pl_conn_write(s->conn, out.data, out.len);
	pl_buf_free(&out);
	release_domain(s);
	s->state = CLOSING;
	pl_conn_close_after_flush(s->conn);
}

/* ---- the router's side: stanzas for a component domain ------------------- */

static void route_to_component(void *context, struct pl_xnode *stanza,
			       struct pl_session *origin, const struct pl_jid *to)
{
	struct domain *d = context;
	struct stream *s = d->connected;
	if (!s || s->state != READY) {
		pl_route_error(stanza, PL_ERR_SERVICE_UNAVAILABLE, "the component is not connected");
		return;
	}
	/* Written with jabber:client as the namespace in scope: inside the
	 * component stream the unprefixed elements are then in
	 * jabber:component:accept, as XEP-0114 wants. */
	struct pl_buf out = { 0 };
	pl_xnode_serialize(stanza, PL_NS_CLIENT, &out);
	pl_conn_write(s->conn, out.data, out.len);
	pl_buf_free(&out);
}

/* Connected components are the server's items (XEP-0030, XEP-0114 5). */
static int on_disco_items(struct pl_event *event, void *userdata)
{
	struct pl_disco_items *items = event->data;
	struct pl_xnode *query = items->query;
	for (struct domain *d = domains; d; d = d->next) {
		if (!d->connected)
			continue;
		struct pl_xnode *item = pl_xnode_add_element(query, "item", NS_DISCO_ITEMS);
		pl_xnode_set_attr(item, "jid", d->name);
	}
	return PL_CONTINUE;
}

/* ---- the stream ----------------------------------------------------------- */

static const char *attribute_of(const char *const *attributes, const char *name)
{
	for (size_t i = 0; attributes[i]; i += 2)
		if (strcmp(attributes[i], name) == 0)
			return attributes[i + 1];
	return NULL;
}

static void on_open(void *userdata, const char *name, const char *ns, const char *content_ns,
		    const char *const *attributes)
{
	struct stream *s = userdata;
	if (s->state != WAIT_HEADER) {
		stream_error(s, "not-authorized", "no stream restart on a component stream");
		return;
	}
	if (strcmp(name, "stream") != 0 || !ns || strcmp(ns, PL_NS_STREAMS) != 0 ||
	    !content_ns || strcmp(content_ns, NS_COMPONENT) != 0) {
		stream_error(s, "invalid-namespace", "expected a " NS_COMPONENT " stream");
		return;
	}
	const char *to = attribute_of(attributes, "to");
	char *domain = to ? pl_jid_prep_domain(to) : NULL;
	struct domain *d = domain ? find_domain(domain) : NULL;
	free(domain);
	if (!d) {
		stream_error(s, "host-unknown",
			     to ? "no component is configured for that domain" : "no 'to'");
		return;
	}
	s->domain = d;
	s->state = WAIT_HANDSHAKE;
	struct pl_buf out = { 0 };
	pl_buf_printf(&out, "<?xml version='1.0'?><stream:stream xmlns='" NS_COMPONENT "' "
			    "xmlns:stream='" PL_NS_STREAMS "' id='%s' from='%s'>",
		      s->stream_id, d->name);
	pl_conn_write(s->conn, out.data, out.len);
	pl_buf_free(&out);
}

/* XEP-0114 3: the lower-case hex SHA-1 of the stream id and the secret
 * (the comparison ignores case: some components send upper case). */
static bool handshake_matches(const struct stream *s, const char *digest_text)
{
	char *input = pl_asprintf("%s%s", s->stream_id, s->domain->conf.secret);
	unsigned char digest[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)input, strlen(input), digest);
	OPENSSL_cleanse(input, strlen(input));
	free(input);
	char expected[2 * SHA_DIGEST_LENGTH + 1], given[2 * SHA_DIGEST_LENGTH + 1];
	for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(expected + 2 * i, 3, "%02x", digest[i]);
	size_t len = strlen(digest_text);
	/* Surrounding whitespace is not part of the digest. */
	while (len && (digest_text[0] == ' ' || digest_text[0] == '\n' || digest_text[0] == '\t')) {
		digest_text++;
		len--;
	}
	while (len && (digest_text[len - 1] == ' ' || digest_text[len - 1] == '\n' ||
		       digest_text[len - 1] == '\t' || digest_text[len - 1] == '\r'))
		len--;
	if (len != 2 * SHA_DIGEST_LENGTH)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = digest_text[i];
		given[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
	}
	given[len] = '\0';
	return CRYPTO_memcmp(expected, given, len) == 0;
}

static void handle_handshake(struct stream *s, struct pl_xnode *element)
{
	if (strcmp(element->name, "handshake") != 0 || !element->ns ||
	    strcmp(element->ns, NS_COMPONENT) != 0) {
		stream_error(s, "not-authorized", "send the handshake first");
		return;
	}
	char *text = pl_xnode_text(element);
	bool good = handshake_matches(s, text);
	free(text);
	if (!good) {
		pl_log_session(PL_LOG_WARN, "component", s->log_id,
			       "%s: handshake for %s failed (wrong secret)",
			       pl_conn_peer_address(s->conn), s->domain->name);
		stream_error(s, "not-authorized", "wrong handshake");
		return;
	}
	struct stream *old = s->domain->connected;
	if (old && old != s) {
		if (!s->domain->conf.replace) {
			stream_error(s, "conflict", "the component is already connected");
			return;
		}
		stream_error(old, "conflict", "replaced by a new connection of the component");
	}
	s->domain->connected = s;
	s->state = READY;
	/* A component may stay silent for a long time. */
	pl_conn_set_idle_timeout(s->conn, 0);
	pl_conn_write(s->conn, "<handshake/>", strlen("<handshake/>"));
	pl_log_session(PL_LOG_INFO, "component", s->log_id, "%s: component %s authenticated%s",
		       pl_conn_peer_address(s->conn), s->domain->name,
		       old && old != s ? " (replacing its previous connection)" : "");
}

static bool is_stanza(const struct pl_xnode *element)
{
	return element->ns && strcmp(element->ns, NS_COMPONENT) == 0 &&
	       (strcmp(element->name, "message") == 0 || strcmp(element->name, "presence") == 0 ||
		strcmp(element->name, "iq") == 0);
}

static void handle_stanza(struct stream *s, struct pl_xnode *stanza)
{
	if (!is_stanza(stanza)) {
		stream_error(s, "unsupported-stanza-type", stanza->name);
		return;
	}
	const char *from = pl_xnode_attr(stanza, "from");
	const char *to = pl_xnode_attr(stanza, "to");
	if (!from || !to) {
		stream_error(s, "improper-addressing", "stanzas need 'from' and 'to'");
		return;
	}
	struct pl_jid jid;
	if (pl_jid_parse(from, &jid) != PL_JID_OK) {
		stream_error(s, "invalid-from", "'from' is not a JID");
		return;
	}
	if (strcmp(jid.domain, s->domain->name) != 0) {
		char *text = pl_asprintf("%s is not at %s", jid.full, s->domain->name);
		stream_error(s, "invalid-from", text);
		free(text);
		pl_jid_free(&jid);
		return;
	}
	pl_xnode_set_attr(stanza, "from", jid.full);
	pl_jid_free(&jid);
	pl_xnode_replace_ns(stanza, NS_COMPONENT, PL_NS_CLIENT);
	pl_route(stanza, NULL);
}

static void on_element(void *userdata, struct pl_xnode *element)
{
	struct stream *s = userdata;
	if (s->state == WAIT_HANDSHAKE)
		handle_handshake(s, element);
	else if (s->state == READY)
		handle_stanza(s, element);
	pl_xnode_unref(&element);
}

static void on_stream_close(void *userdata)
{
	struct stream *s = userdata;
	if (s->state == CLOSING)
		return;
	release_domain(s);
	pl_conn_write(s->conn, "</stream:stream>", strlen("</stream:stream>"));
	s->state = CLOSING;
	pl_conn_close_after_flush(s->conn);
}

static void on_xml_error(void *userdata, enum pl_xml_error error, const char *detail)
{
	stream_error(userdata, pl_xml_error_condition(error), detail);
}

static const struct pl_xml_stream_callbacks xml_callbacks = { on_open, on_element,
							      on_stream_close, on_xml_error };

static size_t on_data(struct pl_conn *conn, const char *data, size_t len, void *userdata)
{
	struct stream *s = userdata;
	if (s->state != CLOSING)
		pl_xml_stream_feed(s->parser, data, len);
	return len;
}

static void on_conn_close(struct pl_conn *conn, enum pl_conn_close_reason reason, void *userdata)
{
	struct stream *s = userdata;
	if (reason == PL_CONN_TIMEOUT)
		pl_log_session(PL_LOG_INFO, "component", s->log_id, "%s: negotiation timed out",
			       pl_conn_peer_address(conn));
	free_stream(s);
}

static const struct pl_conn_callbacks conn_callbacks = { on_data, on_conn_close };

static void on_accept(int fd, const struct sockaddr *peer, socklen_t peer_len, void *arg)
{
	struct stream *s = pl_calloc(1, sizeof(*s));
	s->conn = pl_conn_new(loop, fd, peer, peer_len, PL_TLS_ALPN_NONE, &conn_callbacks, s);
	if (!s->conn) {
		free(s);
		return;
	}
	s->parser = pl_xml_stream_new(&limits, &xml_callbacks, s);
	uint8_t random[16];
	pl_random_bytes(random, sizeof(random));
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf(s->stream_id + i * 2, 3, "%02x", random[i]);
	static uint64_t counter;
	snprintf(s->log_id, sizeof(s->log_id), "comp%llu", (unsigned long long)++counter);
	pl_conn_set_idle_timeout(s->conn, conf.negotiation_timeout_ms);
	s->next = streams;
	if (streams)
		streams->prev = s;
	streams = s;
}

/* ---- start and stop ------------------------------------------------------- */

static int add_domain(const struct pl_config *config, const struct pl_config_section *section,
		      char **error)
{
	char *name = section->name ? pl_jid_prep_domain(section->name) : NULL;
	if (!name)
		return pl_error(error, -EINVAL, "%s:%d: <component name=\"%s\">: not a valid domain",
				config->path, section->line, section->name ? section->name : "");
	struct domain *d = pl_calloc(1, sizeof(*d));
	d->name = name;
	d->next = domains;
	domains = d;
	char *what = pl_asprintf("<component name=\"%s\">", name);
	int rc = pl_options_apply(domain_options, &d->conf, section, config->path, what, error);
	free(what);
	if (rc)
		return rc;
	if (!d->conf.secret || !d->conf.secret[0])
		return pl_error(error, -EINVAL, "%s:%d: <component name=\"%s\"> needs a secret",
				config->path, section->line, name);
	if (pl_router_add_domain(name, route_to_component, d) != 0)
		return pl_error(error, -EINVAL,
				"%s:%d: component %s: the domain is a host or served already",
				config->path, section->line, name);
	return 0;
}

int pl_component_start(struct event_base *base, const struct pl_config *config, char **error)
{
	loop = base;
	int rc = pl_options_apply(listener_options, &conf,
				  pl_config_find(config, "components", NULL), config->path,
				  "<components>", error);
	if (rc)
		return rc;
	limits = pl_xml_default_limits;
	limits.max_stanza_bytes = conf.max_stanza_size;
	size_t count = 0;
	for (const struct pl_config_section *s = pl_config_next(config, "component", NULL); s;
	     s = pl_config_next(config, "component", s)) {
		if ((rc = add_domain(config, s, error)) != 0)
			return rc;
		count++;
	}
	if (count == 0)
		return 0;
	pl_hook(NULL, "disco/items", on_disco_items, NULL, 0);
	if (conf.port > 0 &&
	    (rc = pl_listener_open(base, conf.address, (int)conf.port, on_accept, NULL, &listener,
				   error)) != 0)
		return rc;
	pl_log(PL_LOG_INFO, "component", "listening on %s port %lld for %zu component%s",
	       conf.address, (long long)conf.port, count, count == 1 ? "" : "s");
	return 0;
}

bool pl_component_begin_shutdown(void)
{
	pl_listener_close(listener);
	listener = NULL;
	for (struct stream *s = streams; s; s = s->next)
		stream_error(s, "system-shutdown", "the server is shutting down");
	return streams != NULL;
}

bool pl_component_idle(void)
{
	return streams == NULL;
}

void pl_component_stop(void)
{
	pl_listener_close(listener);
	listener = NULL;
	while (streams) {
		struct stream *s = streams;
		if (s->state != CLOSING) {
			/* Best effort: the loop is not running any more. */
			stream_error(s, "system-shutdown", "the server is shutting down");
		}
		pl_conn_free(s->conn);
		free_stream(s);
	}
	while (domains) {
		struct domain *d = domains;
		domains = d->next;
		pl_router_remove_domain(d->name);
		pl_options_free(domain_options, &d->conf);
		free(d->name);
		free(d);
	}
	pl_options_free(listener_options, &conf);
}
