/* mod_extdisco: XEP-0215 external service discovery, so that audio and
 * video calls (Conversations, Dino) find the operator's STUN and TURN
 * servers. Services are configured as RFC 7064/7065 URIs
 * ("turn:turn.example.com:3478?transport=udp"); TURN services get
 * time-limited credentials made with the shared secret of the TURN REST
 * API scheme that coturn implements (username "<expiry>:<account>",
 * password base64(HMAC-SHA1(secret, username))), so no long-lived TURN
 * password is ever handed to a client. Only the server's own users ask. */
#include "jid.h"
#include "parley/module.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_EXTDISCO "urn:xmpp:extdisco:2"

struct extdisco_conf {
	struct pl_string_list services;
	char *secret;
	int64_t ttl_ms;
};

static const struct pl_option extdisco_options[] = {
	{ "service", PL_OPT_LIST, NULL, 0, 0, NULL, offsetof(struct extdisco_conf, services),
	  "a STUN or TURN URI: stun:host[:port], turn:host[:port][?transport=udp|tcp], "
	  "stuns:, turns: (may repeat)" },
	{ "secret", PL_OPT_STRING, NULL, 0, 0, NULL, offsetof(struct extdisco_conf, secret),
	  "the TURN REST API shared secret (coturn's static-auth-secret)" },
	{ "ttl", PL_OPT_DURATION, "1d", 60000, 30LL * 86400000, NULL,
	  offsetof(struct extdisco_conf, ttl_ms), "how long TURN credentials stay valid" },
	{ NULL }
};

struct service {
	char type[8];                    /* stun, stuns, turn, turns */
	char host[256];
	int port;
	char transport[4];               /* udp, tcp */
};

static struct extdisco_conf conf;
static struct service *services;      /* owned */
static size_t service_count;

/* RFC 7064/7065: scheme:host[:port][?transport=udp|tcp]; 0 or -EINVAL. */
static int parse_uri(const char *uri, struct service *out)
{
	memset(out, 0, sizeof(*out));
	const char *colon = strchr(uri, ':');
	if (!colon || colon - uri >= (ptrdiff_t)sizeof(out->type))
		return -EINVAL;
	memcpy(out->type, uri, (size_t)(colon - uri));
	bool secure = strcmp(out->type, "stuns") == 0 || strcmp(out->type, "turns") == 0;
	if (strcmp(out->type, "stun") != 0 && strcmp(out->type, "turn") != 0 && !secure)
		return -EINVAL;
	const char *host = colon + 1;
	const char *query = strchr(host, '?');
	size_t host_part = query ? (size_t)(query - host) : strlen(host);
	const char *port_sep = memchr(host, ':', host_part);
	size_t host_len = port_sep ? (size_t)(port_sep - host) : host_part;
	if (host_len == 0 || host_len >= sizeof(out->host))
		return -EINVAL;
	memcpy(out->host, host, host_len);
	out->port = secure ? 5349 : 3478;
	if (port_sep) {
		char *end;
		long port = strtol(port_sep + 1, &end, 10);
		if (end != host + host_part || port < 1 || port > 65535)
			return -EINVAL;
		out->port = (int)port;
	}
	snprintf(out->transport, sizeof(out->transport), "%s", secure ? "tcp" : "udp");
	if (query) {
		if (strcmp(query, "?transport=udp") == 0 && !secure)
			snprintf(out->transport, sizeof(out->transport), "udp");
		else if (strcmp(query, "?transport=tcp") == 0)
			snprintf(out->transport, sizeof(out->transport), "tcp");
		else
			return -EINVAL;
	}
	return 0;
}

static int check(const void *conf_ptr, char **error)
{
	const struct extdisco_conf *c = conf_ptr;
	bool turn = false;
	for (size_t i = 0; i < c->services.count; i++) {
		struct service s;
		if (parse_uri(c->services.items[i], &s) != 0)
			return pl_error(error, -EINVAL,
					"service \"%s\" is not a STUN or TURN URI (turn:host:3478?transport=udp)",
					c->services.items[i]);
		turn |= strncmp(s.type, "turn", 4) == 0;
	}
	if (turn && (!c->secret || !*c->secret))
		return pl_error(error, -EINVAL, "TURN services need the shared secret (secret=...)");
	return 0;
}

static void format_stamp(time_t t, char *out, size_t size)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The TURN REST API credentials for `account`, valid until `expiry`. */
static void add_credentials(struct pl_xnode *service, const char *account, time_t expiry)
{
	char *username = pl_asprintf("%lld:%s", (long long)expiry, account);
	uint8_t digest[64];
	pl_scram_hmac(PL_SCRAM_SHA1, conf.secret, strlen(conf.secret), username, strlen(username),
		      digest);
	char *password = pl_base64_encode(digest, 20);
	char stamp[32];
	format_stamp(expiry, stamp, sizeof(stamp));
	pl_xnode_set_attr(service, "username", username);
	pl_xnode_set_attr(service, "password", password);
	pl_xnode_set_attr(service, "expires", stamp);
	pl_xnode_set_attr(service, "restricted", "1");
	free(username);
	free(password);
}

static int on_services(struct pl_event *event, void *userdata)
{
	struct pl_iq_event *iq = event->data;
	const char *to = pl_xnode_attr(iq->stanza, "to");
	if (to && (strchr(to, '@') || !pl_server_find_host(to)))
		return PL_CONTINUE;
	if (!iq->session)
		return PL_HOOK_ERROR(PL_ERR_FORBIDDEN);
	struct pl_xnode *request = pl_xnode_first_element(iq->stanza);
	bool credentials = strcmp(request->name, "credentials") == 0;
	if (!credentials && strcmp(request->name, "services") != 0)
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	/* <services type='turn'/>, or <credentials><service host= type=/></credentials>. */
	const char *wanted_type = credentials ? NULL : pl_xnode_attr(request, "type");
	const struct pl_xnode *wanted = credentials ? pl_xnode_find(request, "service", NULL) : NULL;
	if (credentials && (!wanted || !pl_xnode_attr(wanted, "host")))
		return PL_HOOK_ERROR(PL_ERR_BAD_REQUEST);
	struct pl_xnode *reply = pl_iq_result(iq->stanza);
	struct pl_xnode *answer = pl_xnode_add_element(reply, request->name, NS_EXTDISCO);
	time_t expiry = time(NULL) + (time_t)(conf.ttl_ms / 1000);
	size_t listed = 0;
	for (size_t i = 0; i < service_count; i++) {
		const struct service *s = &services[i];
		if (wanted_type && strcmp(wanted_type, s->type) != 0)
			continue;
		if (wanted && (strcmp(pl_xnode_attr(wanted, "host"), s->host) != 0 ||
			       (pl_xnode_attr(wanted, "type") &&
				strcmp(pl_xnode_attr(wanted, "type"), s->type) != 0)))
			continue;
		struct pl_xnode *n = pl_xnode_add_element(answer, "service", NULL);
		char port[8];
		snprintf(port, sizeof(port), "%d", s->port);
		pl_xnode_set_attr(n, "type", s->type);
		pl_xnode_set_attr(n, "host", s->host);
		pl_xnode_set_attr(n, "port", port);
		pl_xnode_set_attr(n, "transport", s->transport);
		if (strncmp(s->type, "turn", 4) == 0)
			add_credentials(n, iq->session->bare_jid, expiry);
		listed++;
	}
	if (credentials && !listed) {
		pl_xnode_unref(&reply);
		return PL_HOOK_ERROR(PL_ERR_ITEM_NOT_FOUND);
	}
	pl_route(reply, NULL);
	pl_xnode_unref(&reply);
	return PL_HANDLED;
}

static int extdisco_load(struct pl_module *m, const void *conf_ptr, char **error)
{
	conf = *(const struct extdisco_conf *)conf_ptr;
	service_count = conf.services.count;
	services = service_count ? pl_calloc(service_count, sizeof(*services)) : NULL;
	for (size_t i = 0; i < service_count; i++)
		parse_uri(conf.services.items[i], &services[i]); /* checked already */
	pl_feature(m, NS_EXTDISCO);
	pl_hook(m, "iq/get/" NS_EXTDISCO, on_services, NULL, 0);
	if (!service_count)
		pl_module_log(m, 1, "no service configured: calls will find no STUN or TURN server");
	(void)error;
	return 0;
}

static void extdisco_unload(struct pl_module *m)
{
	free(services);
	services = NULL;
	service_count = 0;
	(void)m;
}

PL_MODULE(extdisco, .version = "0.1", .options = extdisco_options,
	  .conf_size = sizeof(struct extdisco_conf), .check = check, .load = extdisco_load,
	  .unload = extdisco_unload);
